/**
 * footprint: memory of a mesh node process beside a raw libp2p node process with the same stack
 * (TCP + Noise + Yamux + identify + ping + kad-dht + gossipsub), each in its own process.
 *
 * Idle: the node started, listening on 127.0.0.1, no peers, left alone for a few seconds; RSS
 * and V8 heap after a full GC (`--expose-gc`). An empty worker process (nothing loaded) is
 * measured too, so the node's own share can be told apart from Node's.
 * Under load: a client process sends ~1 KiB echo requests, 64 in flight, for ~5 s (mesh:
 * `request(…, 'echo')`; raw: varint-framed echo over a pool of 4 reused streams); the server's
 * RSS and heap are sampled every 50 ms (peak), then measured again after a full GC.
 */
import { figure } from '../lib/figure.js'
import type { PhaseSamples } from '../lib/load.js'
import { loopbackAddr, startMeshNode } from '../lib/mesh.js'
import type { BenchContext, Benchmark, BenchResult, RoleFactory, RoleInstance } from '../lib/registry.js'
import { round } from '../lib/stats.js'
import type { Worker } from '../lib/workers.js'
import { roles as rpcRoles } from './rpc.js'

interface Config { settleMs: number, loadMs: number, inflight: number }
const FULL: Config = { settleMs: 4000, loadMs: 5000, inflight: 64 }
const QUICK: Config = { settleMs: 2000, loadMs: 2000, inflight: 64 }

interface Mem { rss: number, heapUsed: number, heapTotal: number, external: number, arrayBuffers: number }
type Kind = 'mesh' | 'raw'

const MB = 2 ** 20
const mb = (bytes: number): number => bytes / MB

async function run (ctx: BenchContext): Promise<BenchResult> {
  const cfg = ctx.quick ? QUICK : FULL
  const gc = { nodeArgs: ['--expose-gc'] }
  ctx.log('idle: starting an empty process, a raw node and a mesh node (one process each)')
  const empty = await ctx.spawn('empty', {}, gc)
  const servers: Record<Kind, Worker> = {
    raw: await ctx.spawn('raw-server', {}, gc),
    mesh: await ctx.spawn('mesh-server', {}, gc)
  }
  // idle = left alone: their timers (DHT, gossipsub heartbeats, card refresh) run meanwhile
  await Promise.all([empty, servers.raw, servers.mesh].map(async w => await w.call('settle', { ms: cfg.settleMs }, cfg.settleMs + 10_000)))
  const idle = {
    empty: await empty.call<Mem>('memory', { gc: true }, 10_000),
    raw: await servers.raw.call<Mem>('memory', { gc: true }, 10_000),
    mesh: await servers.mesh.call<Mem>('memory', { gc: true }, 10_000)
  }
  const idleCpu = { raw: (await servers.raw.usage()).cpuUs, mesh: (await servers.mesh.usage()).cpuUs }

  const load: Record<Kind, { peak: Mem, after: Mem, completed: number, rps: number, serverCpuUsPerReq: number }> = {} as any
  for (const kind of ['raw', 'mesh'] as const) {
    if (ctx.signal.aborted) throw new Error('interrupted')
    ctx.log(`load: ${kind} server, ${cfg.inflight} requests in flight for ${cfg.loadMs} ms`)
    const client = await ctx.spawn(`${kind}-client`, kind === 'raw' ? { target: servers.raw.ready.multiaddr, streams: 4 } : { target: servers.mesh.ready.multiaddr })
    const cpu0 = (await servers[kind].usage()).cpuUs
    await servers[kind].call('watch', { intervalMs: 50 }, 10_000)
    const samples = await client.call<PhaseSamples>('phase', { count: 1_000_000, inflight: cfg.inflight, maxMs: cfg.loadMs }, cfg.loadMs + 60_000)
    const peak = await servers[kind].call<Mem>('peak', {}, 10_000)
    const cpu = (await servers[kind].usage()).cpuUs - cpu0
    await client.close()
    const after = await servers[kind].call<Mem>('memory', { gc: true }, 10_000)
    load[kind] = { peak, after, completed: samples.completed, rps: samples.completed / (samples.elapsedMs / 1000), serverCpuUsPerReq: cpu / samples.completed }
  }

  const f = (key: keyof Mem, m: Mem): number => mb(m[key])
  const view = (m: Mem) => Object.fromEntries(Object.entries(m).map(([k, v]) => [k + 'MB', round(mb(v))]))
  return {
    title: 'memory of one node process: idle (no peers) and under ~5 s of rpc load (64 in flight), each in its own process',
    baseline: 'a raw libp2p node process with the same stack (TCP+Noise+Yamux+identify+ping+kad-dht+gossipsub, same versions); under load it answers a varint-framed echo protocol',
    config: { ...cfg, gc: 'heap figures after global.gc() (--expose-gc); peaks sampled every 50 ms without GC' },
    figures: {
      idle_rss_mb: figure({ label: 'idle RSS', unit: 'MB', better: 'lower', value: f('rss', idle.mesh), baseline: f('rss', idle.raw) }),
      idle_heap_mb: figure({ label: 'idle V8 heap used (after GC)', unit: 'MB', better: 'lower', value: f('heapUsed', idle.mesh), baseline: f('heapUsed', idle.raw) }),
      idle_cpu_ms: figure({ label: `CPU from process start through ${cfg.settleMs / 1000} s idle`, unit: 'ms', better: 'lower', value: idleCpu.mesh / 1000, baseline: idleCpu.raw / 1000 }),
      load_peak_rss_mb: figure({ label: 'under load: peak RSS of the server', unit: 'MB', better: 'lower', value: f('rss', load.mesh.peak), baseline: f('rss', load.raw.peak) }),
      load_peak_heap_mb: figure({ label: 'under load: peak V8 heap used of the server', unit: 'MB', better: 'lower', value: f('heapUsed', load.mesh.peak), baseline: f('heapUsed', load.raw.peak) }),
      after_load_rss_mb: figure({ label: 'after load: RSS (after GC)', unit: 'MB', better: 'lower', value: f('rss', load.mesh.after), baseline: f('rss', load.raw.after) }),
      after_load_heap_mb: figure({ label: 'after load: V8 heap used (after GC)', unit: 'MB', better: 'lower', value: f('heapUsed', load.mesh.after), baseline: f('heapUsed', load.raw.after) }),
      load_rps: figure({ label: 'requests served during the load', unit: 'req/s', better: 'higher', value: load.mesh.rps, baseline: load.raw.rps }),
      load_server_cpu_us: figure({ label: 'server CPU per request under load', unit: 'µs', better: 'lower', value: load.mesh.serverCpuUsPerReq, baseline: load.raw.serverCpuUsPerReq })
    },
    details: {
      emptyProcess: view(idle.empty),
      idle: { mesh: view(idle.mesh), raw: view(idle.raw) },
      loadPeak: { mesh: view(load.mesh.peak), raw: view(load.raw.peak) },
      afterLoad: { mesh: view(load.mesh.after), raw: view(load.raw.after) },
      requests: { mesh: load.mesh.completed, raw: load.raw.completed }
    },
    notes: [
      `an empty worker process (Node ${process.version}, nothing loaded) has RSS ${round(mb(idle.empty.rss))} MB, heap ${round(mb(idle.empty.heapUsed))} MB`,
      'the mesh node also holds its LevelDB store (native memory, counted in RSS, not in the V8 heap)'
    ]
  }
}

export const benchmark: Benchmark = {
  name: 'footprint',
  description: 'RSS/heap of an idle mesh node vs an idle raw libp2p node, and under rpc load',
  run
}

function memory (gc: boolean): Mem {
  const g = (globalThis as { gc?: () => void }).gc
  if (gc && g !== undefined) { g(); g() }
  const m = process.memoryUsage()
  return { rss: m.rss, heapUsed: m.heapUsed, heapTotal: m.heapTotal, external: m.external, arrayBuffers: m.arrayBuffers }
}

/** The methods every footprint server has: settle, memory, watch/peak. */
function memoryMethods (): RoleInstance['methods'] {
  let peak: Mem | undefined
  let timer: NodeJS.Timeout | undefined
  return {
    settle: async (p: { ms: number }) => { await new Promise(resolve => setTimeout(resolve, Math.min(p.ms, 60_000))) },
    memory: (p: { gc?: boolean }) => memory(p.gc === true),
    watch: (p: { intervalMs: number }) => {
      clearInterval(timer)
      peak = memory(false)
      timer = setInterval(() => {
        const m = memory(false)
        for (const k of Object.keys(m) as Array<keyof Mem>) if (m[k] > peak![k]) peak![k] = m[k]
      }, Math.max(10, p.intervalMs))
      timer.unref()
    },
    peak: () => {
      clearInterval(timer)
      const m = memory(false)
      for (const k of Object.keys(m) as Array<keyof Mem>) if (m[k] > peak![k]) peak![k] = m[k]
      return peak
    }
  }
}

export const roles: Record<string, RoleFactory> = {
  empty: async () => ({ methods: memoryMethods(), close: async () => {} }),

  'raw-server': async () => {
    await import('@persona-mesh/node/polyfill') // Node 20: before libp2p
    const { createRawStackNode } = await import('../lib/raw-stack.js')
    const { handleEcho } = await import('../lib/raw-libp2p.js')
    const node = await createRawStackNode()
    await handleEcho(node)
    return { ready: { multiaddr: loopbackAddr(node.getMultiaddrs().map(String)) }, methods: memoryMethods(), close: async () => { await node.stop() } }
  },

  'mesh-server': async () => {
    const { node, close } = await startMeshNode('bench-footprint')
    node.handle('echo', body => body, { maxConcurrent: 256 })
    return { ready: { multiaddr: loopbackAddr(node.multiaddrs) }, methods: memoryMethods(), close }
  },

  'raw-client': rpcRoles['raw-client'],
  'mesh-client': rpcRoles['mesh-client']
}
