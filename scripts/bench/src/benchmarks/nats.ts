/**
 * nats: Persona Mesh side by side with a NATS server — what many agent platforms use instead of
 * a mesh. Measured in the same run on the same machine; the NATS figure is the baseline
 * (ratio = mesh / NATS). Skipped with a note when `nats-server` is not on PATH
 * (`apt-get install -y nats-server`).
 *
 * The bench starts `nats-server -a 127.0.0.1 -p <free port>` and stops it at the end.
 *  - request/reply: ~1 KiB JSON each way. NATS: `request('bench.echo')` to a responder process
 *    (through the broker). Mesh: `request(peer, 'echo')` between two node processes (direct).
 *    One at a time, and 64 in flight. Client, server (and broker) CPU per request.
 *  - pub/sub: one publisher process, one process with 3 subscribers (3 NATS connections / 3
 *    mesh nodes subscribed to a topic), paced publishing; latency publish → delivered to the
 *    subscriber (mesh: `message:received`, after the broadcast is verified and stored in the
 *    inbox), from a monotonic clock shared by the processes; and the share delivered.
 */
import type { ChildProcess } from 'node:child_process'
import { spawn, spawnSync } from 'node:child_process'
import { readFile } from 'node:fs/promises'
import { createServer, connect as netConnect } from 'node:net'
import { figure } from '../lib/figure.js'
import type { PhaseParams, PhaseSamples } from '../lib/load.js'
import { runPhase } from '../lib/load.js'
import { loopbackAddr, startMeshNode } from '../lib/mesh.js'
import type { BenchContext, Benchmark, BenchResult, RoleFactory } from '../lib/registry.js'
import { round, summarize } from '../lib/stats.js'
import type { Worker } from '../lib/workers.js'
import { roles as rpcRoles } from './rpc.js'

const BODY = { data: 'x'.repeat(1000) }
const SUBJECT = 'bench.echo'
const PUB_SUBJECT = 'bench.pub'
const TOPIC = 'bench-pub'
const SUBSCRIBERS = 3
const PAD = 'y'.repeat(200)

interface Config { warmup: number, sequential: number, inflightCount: number, inflight: number, rounds: number, phaseCapMs: number, messages: number, intervalMs: number }
const FULL: Config = { warmup: 500, sequential: 2000, inflightCount: 12_000, inflight: 64, rounds: 2, phaseCapMs: 12_000, messages: 200, intervalMs: 20 }
const QUICK: Config = { warmup: 200, sequential: 600, inflightCount: 3000, inflight: 64, rounds: 2, phaseCapMs: 5000, messages: 60, intervalMs: 20 }

type Side = 'mesh' | 'nats'

function natsServerBinary (): string | undefined {
  const out = spawnSync('nats-server', ['--version'], { encoding: 'utf8', timeout: 10_000 })
  if (out.error !== undefined || out.status !== 0) return undefined
  return out.stdout.trim()
}

async function freePort (): Promise<number> {
  return await new Promise((resolve, reject) => {
    const srv = createServer()
    srv.once('error', reject)
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as { port: number }).port
      srv.close(() => { resolve(port) })
    })
  })
}

async function canConnect (port: number): Promise<boolean> {
  return await new Promise((resolve) => {
    const s = netConnect({ host: '127.0.0.1', port })
    s.once('connect', () => { s.destroy(); resolve(true) })
    s.once('error', () => { resolve(false) })
  })
}

/** user+system CPU of a process from /proc, µs (Linux). */
async function procCpuUs (pid: number | undefined): Promise<number> {
  if (pid === undefined) return Number.NaN
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8')
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    return (Number(fields[11]) + Number(fields[12])) * 1e4
  } catch {
    return Number.NaN
  }
}

/** Start nats-server on 127.0.0.1 and a free port; killed by `stop()` and, at worst, when this process exits. */
async function startNatsServer (): Promise<{ url: string, child: ChildProcess, stop(): Promise<void> }> {
  const port = await freePort()
  const child = spawn('nats-server', ['-a', '127.0.0.1', '-p', String(port)], { stdio: ['ignore', 'ignore', 'pipe'] })
  let stderr = ''
  child.stderr?.on('data', (c: Buffer) => { stderr = (stderr + c.toString()).slice(-4000) })
  const killNow = (): void => { if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL') }
  process.once('exit', killNow)
  const exited = new Promise<void>(resolve => { child.once('exit', () => { resolve() }) })
  const stop = async (): Promise<void> => {
    process.removeListener('exit', killNow)
    if (child.exitCode !== null || child.signalCode !== null) return
    child.kill('SIGTERM')
    const t = setTimeout(killNow, 3000)
    await exited
    clearTimeout(t)
  }
  for (let i = 0; i < 100; i++) {
    if (child.exitCode !== null) break
    if (await canConnect(port)) return { url: `nats://127.0.0.1:${port}`, child, stop }
    await new Promise(resolve => setTimeout(resolve, 50))
  }
  await stop()
  throw new Error(`nats-server did not listen on 127.0.0.1:${port}: ${stderr}`)
}

interface Measured extends PhaseSamples { otherCpuUs: number }

async function run (ctx: BenchContext): Promise<BenchResult> {
  const cfg = ctx.quick ? QUICK : FULL
  const version = natsServerBinary()
  if (version === undefined) {
    const note = 'nats-server is not on PATH (apt-get install -y nats-server); NATS side-by-side skipped'
    ctx.log(`skipped: ${note}`)
    return { title: 'mesh vs NATS (skipped)', baseline: 'NATS', config: {}, figures: {}, details: { skipped: note }, notes: [note] }
  }
  ctx.log(`starting ${version} on 127.0.0.1`)
  const nats = await startNatsServer()
  try {
    const responder = await ctx.spawn('nats-responder', { url: nats.url })
    const requester = await ctx.spawn('nats-requester', { url: nats.url })
    const meshServer = await ctx.spawn('mesh-server')
    const meshClient = await ctx.spawn('mesh-client', { target: meshServer.ready.multiaddr })
    const clients: Record<Side, Worker> = { mesh: meshClient, nats: requester }
    const servers: Record<Side, Worker> = { mesh: meshServer, nats: responder }
    const phase = async (side: Side, params: PhaseParams): Promise<Measured> => {
      if (ctx.signal.aborted) throw new Error('interrupted')
      const s0 = (await servers[side].usage()).cpuUs
      const b0 = side === 'nats' ? await procCpuUs(nats.child.pid) : 0
      const samples = await clients[side].call<PhaseSamples>('phase', params, params.maxMs + 30_000)
      const s1 = (await servers[side].usage()).cpuUs
      const b1 = side === 'nats' ? await procCpuUs(nats.child.pid) : 0
      return { ...samples, otherCpuUs: s1 - s0 + b1 - b0 }
    }
    ctx.log('request/reply warm-up')
    for (const side of ['nats', 'mesh'] as const) {
      await phase(side, { count: cfg.warmup, maxMs: cfg.phaseCapMs })
      await phase(side, { count: cfg.warmup * 2, inflight: cfg.inflight, maxMs: cfg.phaseCapMs })
    }
    const seq: Record<Side, Measured[]> = { mesh: [], nats: [] }
    const par: Record<Side, Measured[]> = { mesh: [], nats: [] }
    const per = (n: number): number => Math.ceil(n / cfg.rounds)
    const cap = Math.ceil(cfg.phaseCapMs / cfg.rounds)
    for (let r = 0; r < cfg.rounds; r++) {
      const order: Side[] = r % 2 === 0 ? ['nats', 'mesh'] : ['mesh', 'nats']
      ctx.log(`request/reply round ${r + 1}/${cfg.rounds}: ${order.join(', ')}`)
      for (const side of order) seq[side].push(await phase(side, { count: per(cfg.sequential), maxMs: cap }))
      for (const side of order) par[side].push(await phase(side, { count: per(cfg.inflightCount), inflight: cfg.inflight, maxMs: cap }))
    }
    await Promise.all([requester, meshClient].map(async w => { await w.close() }))

    // ---- pub/sub ----
    ctx.log(`pub/sub: 1 publisher, ${SUBSCRIBERS} subscribers per side, ${cfg.messages} messages every ${cfg.intervalMs} ms`)
    const natsSubs = await ctx.spawn('nats-subs', { url: nats.url, count: SUBSCRIBERS })
    const natsPub = await ctx.spawn('nats-pub', { url: nats.url })
    const meshSubs = await ctx.spawn('mesh-subs', { count: SUBSCRIBERS })
    const meshPub = await ctx.spawn('mesh-pub', { targets: meshSubs.ready.multiaddrs, subscribers: SUBSCRIBERS }, { readyTimeoutMs: 60_000 })
    const pubsub = { mesh: { lat: [] as number[], delivered: 0, expected: 0, cpuUs: 0 }, nats: { lat: [] as number[], delivered: 0, expected: 0, cpuUs: 0 } }
    const pubs: Record<Side, Worker> = { mesh: meshPub, nats: natsPub }
    const subs: Record<Side, Worker> = { mesh: meshSubs, nats: natsSubs }
    for (let r = 0; r < cfg.rounds; r++) {
      const order: Side[] = r % 2 === 0 ? ['nats', 'mesh'] : ['mesh', 'nats']
      for (const side of order) {
        if (ctx.signal.aborted) throw new Error('interrupted')
        const n = Math.ceil(cfg.messages / cfg.rounds)
        await subs[side].call('reset', {}, 10_000)
        const c0 = (await subs[side].usage()).cpuUs + (await pubs[side].usage()).cpuUs + (side === 'nats' ? await procCpuUs(nats.child.pid) : 0)
        await pubs[side].call('publish', { count: n, intervalMs: cfg.intervalMs }, n * cfg.intervalMs + 30_000)
        const got = await subs[side].call<{ latencies: number[], delivered: number }>('collect', { expected: n * SUBSCRIBERS, timeoutMs: 3000 }, 15_000)
        const c1 = (await subs[side].usage()).cpuUs + (await pubs[side].usage()).cpuUs + (side === 'nats' ? await procCpuUs(nats.child.pid) : 0)
        pubsub[side].lat.push(...got.latencies)
        pubsub[side].delivered += got.delivered
        pubsub[side].expected += n * SUBSCRIBERS
        pubsub[side].cpuUs += c1 - c0
      }
    }

    const merge = (parts: Measured[]) => {
      const completed = parts.reduce((n, p) => n + p.completed, 0)
      const elapsedMs = parts.reduce((n, p) => n + p.elapsedMs, 0)
      const cpu = parts.reduce((n, p) => n + p.cpuUs + p.otherCpuUs, 0)
      return { completed, elapsedMs, rps: completed / (elapsedMs / 1000), summary: summarize(parts.flatMap(p => p.latencies)), cpuUsPerReq: cpu / completed }
    }
    const s = { mesh: merge(seq.mesh), nats: merge(seq.nats) }
    const p = { mesh: merge(par.mesh), nats: merge(par.nats) }
    const ps = { mesh: summarize(pubsub.mesh.lat), nats: summarize(pubsub.nats.lat) }
    const ratio = (x: { delivered: number, expected: number }): number => x.expected === 0 ? Number.NaN : 100 * x.delivered / x.expected
    const lat = (x: ReturnType<typeof summarize>) => Object.fromEntries(Object.entries(x).map(([k, v]) => [k, round(v)]))
    const p50s = (parts: Measured[]): number[] => parts.map(x => merge([x]).summary.p50)
    const rpss = (parts: Measured[]): number[] => parts.map(x => merge([x]).rps)
    return {
      title: `Persona Mesh vs NATS (${version}) on 127.0.0.1: request/reply and pub/sub`,
      baseline: 'NATS: nats-server on 127.0.0.1, the `nats` npm client; request/reply through the broker to a responder process; pub/sub to 3 subscriber connections',
      config: { ...cfg, subscribers: SUBSCRIBERS, bodyBytes: JSON.stringify(BODY).length, natsServer: version },
      figures: {
        reqrep_p50_ms: figure({ label: 'request/reply one at a time, p50 (mesh rpc vs NATS request)', unit: 'ms', better: 'lower', value: s.mesh.summary.p50, baseline: s.nats.summary.p50, roundValues: p50s(seq.mesh), roundBaselines: p50s(seq.nats) }),
        reqrep_p95_ms: figure({ label: 'request/reply one at a time, p95', unit: 'ms', better: 'lower', value: s.mesh.summary.p95, baseline: s.nats.summary.p95 }),
        reqrep_seq_rps: figure({ label: 'request/reply one at a time, throughput', unit: 'req/s', better: 'higher', value: s.mesh.rps, baseline: s.nats.rps }),
        reqrep_inflight_rps: figure({ label: `request/reply ${cfg.inflight} in flight, throughput`, unit: 'req/s', better: 'higher', value: p.mesh.rps, baseline: p.nats.rps, roundValues: rpss(par.mesh), roundBaselines: rpss(par.nats) }),
        reqrep_inflight_p50_ms: figure({ label: `request/reply ${cfg.inflight} in flight, p50`, unit: 'ms', better: 'lower', value: p.mesh.summary.p50, baseline: p.nats.summary.p50 }),
        reqrep_cpu_us: figure({ label: `request/reply ${cfg.inflight} in flight, CPU per request (all processes, incl. nats-server)`, unit: 'µs', better: 'lower', value: p.mesh.cpuUsPerReq, baseline: p.nats.cpuUsPerReq }),
        pubsub_p50_ms: figure({ label: `pub/sub to ${SUBSCRIBERS} subscribers, paced, latency p50 (mesh broadcast vs NATS publish)`, unit: 'ms', better: 'lower', value: ps.mesh.p50, baseline: ps.nats.p50 }),
        pubsub_p99_ms: figure({ label: 'pub/sub latency p99', unit: 'ms', better: 'lower', value: ps.mesh.p99, baseline: ps.nats.p99 }),
        pubsub_delivered_pct: figure({ label: 'pub/sub delivered', unit: '%', better: 'higher', value: ratio(pubsub.mesh), baseline: ratio(pubsub.nats) }),
        pubsub_cpu_us: figure({ label: 'pub/sub CPU per delivery (all processes, incl. nats-server)', unit: 'µs', better: 'lower', value: pubsub.mesh.cpuUs / Math.max(1, pubsub.mesh.delivered), baseline: pubsub.nats.cpuUs / Math.max(1, pubsub.nats.delivered) })
      },
      details: {
        requestReply: {
          sequential: { mesh: { completed: s.mesh.completed, rps: round(s.mesh.rps), latencyMs: lat(s.mesh.summary) }, nats: { completed: s.nats.completed, rps: round(s.nats.rps), latencyMs: lat(s.nats.summary) } },
          inflight: { mesh: { completed: p.mesh.completed, rps: round(p.mesh.rps), latencyMs: lat(p.mesh.summary) }, nats: { completed: p.nats.completed, rps: round(p.nats.rps), latencyMs: lat(p.nats.summary) } }
        },
        pubsub: { mesh: { ...pubsub.mesh, lat: undefined, latencyMs: lat(ps.mesh) }, nats: { ...pubsub.nats, lat: undefined, latencyMs: lat(ps.nats) } }
      },
      notes: [
        'placement: request/reply — NATS requester, responder and nats-server; mesh client and server: each its own process. pub/sub — one publisher process and one process holding the 3 subscribers, per side',
        'mesh request/reply is direct (peer to peer); NATS goes through the broker (two hops). Mesh broadcasts are signed, verified and stored in the inbox before they count as delivered'
      ]
    }
  } finally {
    await nats.stop()
  }
}

export const benchmark: Benchmark = {
  name: 'nats',
  description: 'mesh rpc and broadcast side by side with a NATS server (skipped without nats-server)',
  run
}

const now = (): bigint => process.hrtime.bigint() // CLOCK_MONOTONIC: shared by every process on the host
const enc = new TextEncoder()
const dec = new TextDecoder()

function checkEcho (answer: unknown): void {
  if ((answer as { data?: string } | null)?.data?.length !== BODY.data.length) throw new Error('echo returned something else')
}

/** Latency collection shared by the subscriber roles. */
function collector () {
  let latencies: number[] = []
  let waiter: { expected: number, resolve(): void } | undefined
  return {
    record (body: { t?: string } | null | undefined): void {
      if (typeof body?.t !== 'string') return
      latencies.push(Number(now() - BigInt(body.t)) / 1e6)
      if (waiter !== undefined && latencies.length >= waiter.expected) waiter.resolve()
    },
    reset (): void { latencies = [] },
    async collect (p: { expected: number, timeoutMs: number }): Promise<{ latencies: number[], delivered: number }> {
      if (latencies.length < p.expected) {
        await new Promise<void>((resolve) => {
          const t = setTimeout(resolve, Math.min(p.timeoutMs, 10_000))
          waiter = { expected: p.expected, resolve: () => { clearTimeout(t); resolve() } }
        })
        waiter = undefined
      }
      return { latencies: latencies.map(x => Math.round(x * 1000) / 1000), delivered: latencies.length }
    }
  }
}

async function paced (count: number, intervalMs: number, publish: (i: number) => Promise<void> | void): Promise<void> {
  const start = performance.now()
  for (let i = 0; i < Math.min(count, 100_000); i++) {
    const due = start + i * intervalMs
    const wait = due - performance.now()
    if (wait > 0) await new Promise(resolve => setTimeout(resolve, wait))
    await publish(i)
  }
}

export const roles: Record<string, RoleFactory> = {
  'mesh-server': rpcRoles['mesh-server'],
  'mesh-client': rpcRoles['mesh-client'],

  'nats-responder': async (args: { url: string }) => {
    const { connect } = await import('nats')
    const nc = await connect({ servers: args.url })
    nc.subscribe(SUBJECT, { callback: (err, msg) => { if (err === null) msg.respond(msg.data) } })
    await nc.flush()
    return { methods: {}, close: async () => { await nc.close() } }
  },

  'nats-requester': async (args: { url: string }) => {
    const { connect } = await import('nats')
    const nc = await connect({ servers: args.url })
    const request = async (): Promise<void> => {
      const m = await nc.request(SUBJECT, enc.encode(JSON.stringify(BODY)), { timeout: 10_000 })
      checkEcho(JSON.parse(dec.decode(m.data)))
    }
    return { methods: { phase: async (params: PhaseParams) => await runPhase(request, params) }, close: async () => { await nc.close() } }
  },

  'nats-subs': async (args: { url: string, count: number }) => {
    const { connect } = await import('nats')
    const c = collector()
    const conns = await Promise.all(Array.from({ length: Math.min(args.count, 16) }, async () => await connect({ servers: args.url })))
    for (const nc of conns) {
      nc.subscribe(PUB_SUBJECT, { callback: (err, msg) => { if (err === null) c.record(JSON.parse(dec.decode(msg.data))) } })
      await nc.flush()
    }
    return {
      methods: { reset: () => { c.reset() }, collect: async (p: { expected: number, timeoutMs: number }) => await c.collect(p) },
      close: async () => { await Promise.all(conns.map(async nc => { await nc.close() })) }
    }
  },

  'nats-pub': async (args: { url: string }) => {
    const { connect } = await import('nats')
    const nc = await connect({ servers: args.url })
    return {
      methods: {
        publish: async (p: { count: number, intervalMs: number }) => {
          await paced(p.count, p.intervalMs, (i) => { nc.publish(PUB_SUBJECT, enc.encode(JSON.stringify({ t: String(now()), i, pad: PAD }))) })
          await nc.flush()
        }
      },
      close: async () => { await nc.close() }
    }
  },

  'mesh-subs': async (args: { count: number }) => {
    const c = collector()
    const nodes = await Promise.all(Array.from({ length: Math.min(args.count, 16) }, async (_, i) => await startMeshNode(`bench-sub-${i}`)))
    for (const { node } of nodes) {
      await node.subscribe(TOPIC)
      node.addEventListener('message:received', (evt) => {
        if (evt.detail.kind === 'broadcast') c.record(evt.detail.body as { t?: string })
      })
    }
    return {
      ready: { multiaddrs: nodes.map(({ node }) => loopbackAddr(node.multiaddrs)) },
      methods: { reset: () => { c.reset() }, collect: async (p: { expected: number, timeoutMs: number }) => await c.collect(p) },
      close: async () => { await Promise.all(nodes.map(async n => { await n.close() })) }
    }
  },

  'mesh-pub': async (args: { targets: string[], subscribers: number }) => {
    const { node, close } = await startMeshNode('bench-pub')
    for (const t of args.targets) await node.dial(t)
    // gossipsub needs the subscriptions (and about one heartbeat) before a publish reaches everyone
    let reach = 0
    for (let i = 0; i < 200 && reach < args.subscribers; i++) {
      reach = (await node.broadcast(TOPIC, { warmup: i })).recipients
      if (reach < args.subscribers) await new Promise(resolve => setTimeout(resolve, 50))
    }
    if (reach < args.subscribers) throw new Error(`broadcast reached ${reach} of ${args.subscribers} subscribers`)
    return {
      methods: {
        publish: async (p: { count: number, intervalMs: number }) => {
          await paced(p.count, p.intervalMs, async (i) => { await node.broadcast(TOPIC, { t: String(now()), i, pad: PAD }) })
        }
      },
      close
    }
  }
}
