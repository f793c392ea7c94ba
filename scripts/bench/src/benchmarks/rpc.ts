/**
 * rpc: request/response round trips between two processes on 127.0.0.1, ~1 KiB JSON each way.
 *
 * Mesh: `createMeshNode` + `node.handle('echo')` / `node.request(serverMultiaddr, 'echo', body)`.
 * Baseline: raw libp2p, same stack and versions, a varint length-prefixed echo protocol over
 * (a) one reused stream, one request at a time; (b) 64 in flight over a pool of reused streams,
 * matched by id. The raw client JSON-encodes the same body per request and decodes the answer.
 *
 * Phases run in rounds in ABBA order (raw, mesh, then mesh, raw, …) and are merged, so drift
 * on a noisy machine hits both sides alike.
 */
import { figure } from '../lib/figure.js'
import type { PhaseParams, PhaseSamples } from '../lib/load.js'
import { runPhase } from '../lib/load.js'
import { loopbackAddr, startMeshNode } from '../lib/mesh.js'
import type { BenchContext, Benchmark, BenchResult, ProcessUsage, RoleFactory } from '../lib/registry.js'
import { round, summarize } from '../lib/stats.js'
import type { Worker } from '../lib/workers.js'

const BODY = { data: 'x'.repeat(1000) }
/** Outbound streams the mesh keeps per peer (DEFAULT_STREAMS_PER_PEER in packages/node/src/rpc/constants.ts). */
const POOL_STREAMS = 4
const INFLIGHT = 64

function checkEcho (answer: unknown): void {
  if ((answer as { data?: string } | null)?.data?.length !== BODY.data.length) {
    throw new Error(`echo returned something else: ${JSON.stringify(answer).slice(0, 80)}`)
  }
}

interface Config {
  warmupSequential: number
  warmupInflight: number
  sequential: number
  inflightRequests: number
  inflight: number
  phaseCapMs: number
  rounds: number
}

const FULL: Config = { warmupSequential: 1000, warmupInflight: 4000, sequential: 3000, inflightRequests: 20_000, inflight: INFLIGHT, phaseCapMs: 15_000, rounds: 4 }
const QUICK: Config = { warmupSequential: 200, warmupInflight: 1000, sequential: 600, inflightRequests: 4000, inflight: INFLIGHT, phaseCapMs: 5000, rounds: 2 }

type Side = 'raw' | 'mesh'

interface Measured extends PhaseSamples {
  /** CPU the server process spent during the phase, µs. */
  serverCpuUs: number
}

async function run (ctx: BenchContext): Promise<BenchResult> {
  const cfg = ctx.quick ? QUICK : FULL
  ctx.log('starting servers and clients (4 processes)')
  const servers: Record<Side, Worker> = {
    raw: await ctx.spawn('raw-server'),
    mesh: await ctx.spawn('mesh-server')
  }
  const clients: Record<Side, Worker> = {
    raw: await ctx.spawn('raw-client', { target: servers.raw.ready.multiaddr, streams: POOL_STREAMS }),
    mesh: await ctx.spawn('mesh-client', { target: servers.mesh.ready.multiaddr })
  }
  const phase = async (side: Side, params: PhaseParams): Promise<Measured> => {
    if (ctx.signal.aborted) throw new Error('interrupted')
    const before = await servers[side].usage()
    const samples = await clients[side].call<PhaseSamples>('phase', params, params.maxMs + 30_000)
    const after = await servers[side].usage()
    return { ...samples, serverCpuUs: after.cpuUs - before.cpuUs }
  }

  ctx.log(`warm-up: ${cfg.warmupSequential} sequential + ${cfg.warmupInflight} at ${cfg.inflight} in flight, each side`)
  for (const side of ['raw', 'mesh'] as const) {
    await phase(side, { count: cfg.warmupSequential, maxMs: cfg.phaseCapMs })
    await phase(side, { count: cfg.warmupInflight, inflight: cfg.inflight, maxMs: cfg.phaseCapMs })
  }

  const seq: Record<Side, Measured[]> = { raw: [], mesh: [] }
  const pipe: Record<Side, Measured[]> = { raw: [], mesh: [] }
  const perRound = (n: number): number => Math.ceil(n / cfg.rounds)
  const capPerRound = Math.ceil(cfg.phaseCapMs / cfg.rounds)
  for (let r = 0; r < cfg.rounds; r++) {
    // ABBA: raw first in even rounds, mesh first in odd ones
    const order: Side[] = r % 2 === 0 ? ['raw', 'mesh'] : ['mesh', 'raw']
    ctx.log(`round ${r + 1}/${cfg.rounds}: ${order.join(', ')}: ${perRound(cfg.sequential)} sequential, ${perRound(cfg.inflightRequests)} at ${cfg.inflight} in flight`)
    for (const side of order) seq[side].push(await phase(side, { count: perRound(cfg.sequential), maxMs: capPerRound }))
    for (const side of order) pipe[side].push(await phase(side, { count: perRound(cfg.inflightRequests), inflight: cfg.inflight, maxMs: capPerRound }))
  }
  const memory = {
    mesh: { server: await servers.mesh.usage(), client: await clients.mesh.usage() },
    raw: { server: await servers.raw.usage(), client: await clients.raw.usage() }
  }

  const merge = (parts: Measured[]) => {
    const completed = parts.reduce((n, p) => n + p.completed, 0)
    const elapsedMs = parts.reduce((n, p) => n + p.elapsedMs, 0)
    const clientCpuUs = parts.reduce((n, p) => n + p.cpuUs, 0)
    const serverCpuUs = parts.reduce((n, p) => n + p.serverCpuUs, 0)
    return {
      completed,
      elapsedMs,
      throughput: completed / (elapsedMs / 1000),
      capped: parts.some(p => p.capped),
      summary: summarize(parts.flatMap(p => p.latencies)),
      /** client + server CPU per request, µs */
      cpuPerRequest: (clientCpuUs + serverCpuUs) / completed,
      clientCpuPerRequest: clientCpuUs / completed,
      serverCpuPerRequest: serverCpuUs / completed
    }
  }
  const rounds = (parts: Measured[], pick: (m: ReturnType<typeof merge>) => number): number[] => parts.map(part => pick(merge([part])))
  const p50 = (m: ReturnType<typeof merge>): number => m.summary.p50
  const rps = (m: ReturnType<typeof merge>): number => m.throughput
  const s = { raw: merge(seq.raw), mesh: merge(seq.mesh) }
  const p = { raw: merge(pipe.raw), mesh: merge(pipe.mesh) }
  const detail = (x: ReturnType<typeof merge>) => ({
    completed: x.completed,
    elapsedMs: round(x.elapsedMs),
    capped: x.capped,
    throughputRps: round(x.throughput),
    latencyMs: Object.fromEntries(Object.entries(x.summary).map(([k, v]) => [k, round(v)])),
    cpuUsPerRequest: { client: round(x.clientCpuPerRequest), server: round(x.serverCpuPerRequest) }
  })
  const mb = (bytes: number): number => Math.round(bytes / 2 ** 20)
  const mem = (u: ProcessUsage) => ({ rssMB: mb(u.rss), heapUsedMB: mb(u.heapUsed) })

  return {
    title: 'request/response, ~1 KiB JSON each way, client and server processes on 127.0.0.1',
    baseline: `raw libp2p (same stack and versions), echo over varint-framed reused streams: one stream sequential; ${cfg.inflight} in flight over a pool of ${POOL_STREAMS}`,
    config: { ...cfg, bodyBytes: JSON.stringify(BODY).length, poolStreams: POOL_STREAMS, order: 'ABBA across rounds, merged' },
    figures: {
      sequential_p50_ms: figure({ label: 'sequential round trip p50', unit: 'ms', better: 'lower', value: s.mesh.summary.p50, baseline: s.raw.summary.p50, goalRatio: 1.3, roundValues: rounds(seq.mesh, p50), roundBaselines: rounds(seq.raw, p50) }),
      sequential_p95_ms: figure({ label: 'sequential round trip p95', unit: 'ms', better: 'lower', value: s.mesh.summary.p95, baseline: s.raw.summary.p95 }),
      sequential_p99_ms: figure({ label: 'sequential round trip p99', unit: 'ms', better: 'lower', value: s.mesh.summary.p99, baseline: s.raw.summary.p99 }),
      sequential_rps: figure({ label: 'sequential throughput', unit: 'req/s', better: 'higher', value: s.mesh.throughput, baseline: s.raw.throughput }),
      sequential_cpu_us: figure({ label: 'sequential CPU per request, client+server', unit: 'µs', better: 'lower', value: s.mesh.cpuPerRequest, baseline: s.raw.cpuPerRequest }),
      inflight64_rps: figure({ label: `${cfg.inflight} in flight throughput`, unit: 'req/s', better: 'higher', value: p.mesh.throughput, baseline: p.raw.throughput, goalRatio: 0.8, roundValues: rounds(pipe.mesh, rps), roundBaselines: rounds(pipe.raw, rps) }),
      inflight64_p50_ms: figure({ label: `${cfg.inflight} in flight latency p50`, unit: 'ms', better: 'lower', value: p.mesh.summary.p50, baseline: p.raw.summary.p50 }),
      inflight64_p99_ms: figure({ label: `${cfg.inflight} in flight latency p99`, unit: 'ms', better: 'lower', value: p.mesh.summary.p99, baseline: p.raw.summary.p99 }),
      inflight64_cpu_us: figure({ label: `${cfg.inflight} in flight CPU per request, client+server`, unit: 'µs', better: 'lower', value: p.mesh.cpuPerRequest, baseline: p.raw.cpuPerRequest })
    },
    details: {
      sequential: { mesh: detail(s.mesh), raw: detail(s.raw) },
      inflight: { mesh: detail(p.mesh), raw: detail(p.raw) },
      memoryAtEnd: {
        mesh: { server: mem(memory.mesh.server), client: mem(memory.mesh.client) },
        raw: { server: mem(memory.raw.server), client: mem(memory.raw.client) }
      }
    }
  }
}

export const benchmark: Benchmark = {
  name: 'rpc',
  description: 'mesh request/response vs raw libp2p echo: sequential latency, throughput at 64 in flight',
  run
}

async function rawNode () {
  await import('@persona-mesh/node/polyfill') // Node 20: before libp2p
  return await import('../lib/raw-libp2p.js')
}

export const roles: Record<string, RoleFactory> = {
  'raw-server': async () => {
    const raw = await rawNode()
    const node = await raw.createRawNode()
    await node.start()
    await raw.handleEcho(node)
    return {
      ready: { multiaddr: loopbackAddr(node.getMultiaddrs().map(String)) },
      methods: {},
      close: async () => { await node.stop() }
    }
  },

  'raw-client': async (args: { target: string, streams: number }) => {
    const raw = await rawNode()
    const node = await raw.createRawNode()
    await node.start()
    const pool = await raw.EchoPool.open(node, args.target, args.streams)
    const first = pool.channels[0]
    return {
      methods: {
        phase: async (params: PhaseParams) => {
          // one at a time: one reused stream; in flight: the least busy stream of the pool
          const request = (params.inflight ?? 1) <= 1
            ? async () => { checkEcho(await first.request(BODY)) }
            : async () => { checkEcho(await pool.leastBusy().request(BODY)) }
          return await runPhase(request, params)
        }
      },
      close: async () => {
        await pool.close()
        await node.stop()
      }
    }
  },

  'mesh-server': async () => {
    const { node, close } = await startMeshNode('bench-server')
    node.handle('echo', body => body)
    return { ready: { multiaddr: loopbackAddr(node.multiaddrs), peerId: node.peerId }, methods: {}, close }
  },

  'mesh-client': async (args: { target: string }) => {
    const { node, close } = await startMeshNode('bench-client')
    await node.dial(args.target)
    return {
      methods: {
        phase: async (params: PhaseParams) => {
          return await runPhase(async () => { checkEcho(await node.request(args.target, 'echo', BODY)) }, params)
        }
      },
      close
    }
  }
}
