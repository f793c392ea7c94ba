/**
 * delivery: durable send → acked between two processes on 127.0.0.1, ~1 KiB frames, fsync on both
 * sides.
 *
 * Mesh: `node.send(receiver, body)` (sealed, synced into the outbox) → `/persona-mesh/deliver/1.1.0`
 * → receiver verifies, syncs it into its inbox, acks → sender syncs the settlement and emits
 * `message:delivered`. Latency is from the `send()` call to that event.
 *
 * Baselines, same stack and versions (TCP + Noise + Yamux), frames of the same size:
 * - raw durable: the least a durable pipe must do. The sender puts the frame into LevelDB (synced,
 *   group-committed), sends it with a 4-byte id over one reused stream; the receiver puts it into
 *   its LevelDB (synced, group-committed) and only then acks that frame alone; the sender deletes
 *   it (synced, group-committed). No signatures, no JSON, no indexes. This is the main baseline:
 *   the goal is about durability, and raw fsync cost is the floor.
 * - raw stream: the same frames acked one by one without any storage (the transport's ceiling).
 *
 * Phases: throughput at N sends outstanding (each waits for its ack), one at a time (latency),
 * one round deeper (2,048 outstanding), one round with mixed priorities (the mesh sends one in ten
 * `high` and one in ten `low`; the raw pipe has no priorities), then the drain: the receiver goes away, the sender queues 10k messages, the receiver comes back
 * (a new process on the same data directory) and we time until the 10k-th is acked. Throughput and
 * latency phases run in rounds in ABBA order and are merged.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { performance } from 'node:perf_hooks'
import { fileURLToPath } from 'node:url'
import { figure } from '../lib/figure.js'
import type { PhaseParams, PhaseSamples } from '../lib/load.js'
import { runPhase } from '../lib/load.js'
import { loadMeshModule, loopbackAddr, startMeshNode, TMP_ROOT_ENV } from '../lib/mesh.js'
import type { BenchContext, Benchmark, BenchResult, RoleFactory } from '../lib/registry.js'
import { round, summarize } from '../lib/stats.js'
import type { Worker } from '../lib/workers.js'

/** Body of every message: the sealed envelope comes to about 1 KiB. */
const BODY = { data: 'x'.repeat(580) }
const DRAIN_GOAL_S = 10
const THROUGHPUT_GOAL = 5000

interface Config {
  warmup: number
  throughput: number
  /** Sends outstanding (not yet acked) at once in the throughput phase. */
  inflight: number
  /**
   * One more phase with this many outstanding: more than a page of the sender's queue waits
   * behind the window (what an application sending without waiting for acks gets), and a message
   * a flush steps over shows as a phase that never completes.
   */
  deepInflight: number
  sequential: number
  drain: number
  phaseCapMs: number
  rounds: number
}

const FULL: Config = { warmup: 3000, throughput: 40_000, inflight: 512, deepInflight: 2048, sequential: 600, drain: 10_000, phaseCapMs: 60_000, rounds: 4 }
const QUICK: Config = { warmup: 1000, throughput: 8000, inflight: 512, deepInflight: 2048, sequential: 200, drain: 10_000, phaseCapMs: 30_000, rounds: 2 }

type Side = 'mesh' | 'raw' | 'stream'

interface Measured extends PhaseSamples {
  /** CPU the receiver process spent during the phase, µs. */
  peerCpuUs: number
  /** Time the receiver's event loop was busy during the phase, ms. */
  peerLoopBusyMs: number
}

interface DrainResult {
  queue: PhaseSamples
  /** From the (re)connect to the last ack. */
  drainMs: number
  delivered: number
}

async function run (ctx: BenchContext): Promise<BenchResult> {
  const cfg = ctx.quick ? QUICK : FULL
  const receiverHome = await mkdtemp(join(process.env[TMP_ROOT_ENV] || tmpdir(), 'pmesh-bench-receiver-'))
  try {
    return await measure(ctx, cfg, receiverHome)
  } finally {
    await rm(receiverHome, { recursive: true, force: true })
  }
}

async function measure (ctx: BenchContext, cfg: Config, receiverHome: string): Promise<BenchResult> {
  ctx.log('starting senders and receivers (4 processes)')
  let meshReceiver = await ctx.spawn('mesh-receiver', { home: receiverHome })
  const meshSender = await ctx.spawn('mesh-sender')
  const frameSize: number = meshSender.ready.frameSize
  const rawReceiver = await ctx.spawn('raw-receiver')
  const rawSender = await ctx.spawn('raw-sender', { target: rawReceiver.ready.multiaddr, frameSize })
  const receiverId: string = meshReceiver.ready.peerId
  await meshSender.call('dial', { target: meshReceiver.ready.multiaddr }, 15_000)

  const senders: Record<Side, Worker> = { mesh: meshSender, raw: rawSender, stream: rawSender }
  const receivers = (): Record<Side, Worker> => ({ mesh: meshReceiver, raw: rawReceiver, stream: rawReceiver })
  const phase = async (side: Side, params: PhaseParams & { mixed?: boolean }): Promise<Measured> => {
    if (ctx.signal.aborted) throw new Error('interrupted')
    const before = await receivers()[side].usage()
    const samples = await senders[side].call<PhaseSamples>('phase', { ...params, to: receiverId, durable: side === 'raw' }, params.maxMs + 60_000)
    const after = await receivers()[side].usage()
    if (samples.completed < params.count) throw new Error(`${side}: only ${samples.completed} of ${params.count} acked within ${params.maxMs} ms`)
    return { ...samples, peerCpuUs: after.cpuUs - before.cpuUs, peerLoopBusyMs: after.loopBusyMs - before.loopBusyMs }
  }

  const sides: Side[] = ['raw', 'stream', 'mesh']
  ctx.log(`warm-up: ${cfg.warmup} at ${cfg.inflight} outstanding + ${Math.ceil(cfg.sequential / 4)} one at a time, each side`)
  for (const side of sides) {
    await phase(side, { count: cfg.warmup, inflight: cfg.inflight, maxMs: cfg.phaseCapMs })
    await phase(side, { count: Math.ceil(cfg.sequential / 4), maxMs: cfg.phaseCapMs })
  }

  const load: Record<Side, Measured[]> = { mesh: [], raw: [], stream: [] }
  const seq: Record<Side, Measured[]> = { mesh: [], raw: [], stream: [] }
  const perRound = (n: number): number => Math.ceil(n / cfg.rounds)
  for (let r = 0; r < cfg.rounds; r++) {
    const order: Side[] = r % 2 === 0 ? ['raw', 'stream', 'mesh'] : ['mesh', 'stream', 'raw']
    ctx.log(`round ${r + 1}/${cfg.rounds}: ${order.join(', ')}: ${perRound(cfg.throughput)} at ${cfg.inflight} outstanding, ${perRound(cfg.sequential)} one at a time`)
    for (const side of order) load[side].push(await phase(side, { count: perRound(cfg.throughput), inflight: cfg.inflight, maxMs: cfg.phaseCapMs }))
    for (const side of order) seq[side].push(await phase(side, { count: perRound(cfg.sequential), maxMs: cfg.phaseCapMs }))
  }

  ctx.log(`deep queue: ${cfg.throughput / 2} at ${cfg.deepInflight} outstanding, raw then mesh`)
  const deepPhase = async (side: Side): Promise<Measured> => await phase(side, { count: cfg.throughput / 2, inflight: cfg.deepInflight, maxMs: cfg.phaseCapMs })
  const deep = { raw: await deepPhase('raw'), mesh: await deepPhase('mesh') }

  ctx.log(`mixed priorities: ${cfg.throughput / 2} at ${cfg.inflight} outstanding, one in ten high and one in ten low (mesh), raw then mesh`)
  const mixed = {
    raw: await phase('raw', { count: cfg.throughput / 2, inflight: cfg.inflight, maxMs: cfg.phaseCapMs }),
    mesh: await phase('mesh', { count: cfg.throughput / 2, inflight: cfg.inflight, maxMs: cfg.phaseCapMs, mixed: true })
  }

  // drain: mesh receiver offline, 10k queued, receiver back (new process, same data dir)
  ctx.log(`drain: receiver offline, ${cfg.drain} queued, receiver back`)
  const before = await meshReceiver.call<{ unread: number }>('count', {}, 10_000)
  await meshReceiver.close()
  const meshQueue = await meshSender.call<PhaseSamples>('queue', { to: receiverId, count: cfg.drain, inflight: 256, maxMs: cfg.phaseCapMs }, cfg.phaseCapMs + 30_000)
  // the drain clock starts when the receiver starts: it redials the sender from its cached cards and
  // delivery can begin before the sender is told to dial it
  const since = Date.now()
  meshReceiver = await ctx.spawn('mesh-receiver', { home: receiverHome })
  const meshDrain = await meshSender.call<{ drainMs: number, delivered: number }>('drain', { target: meshReceiver.ready.multiaddr, maxMs: 120_000, since }, 150_000)
  const after = await meshReceiver.call<{ received: number, duplicates: number, unread: number }>('count', {}, 10_000)
  const rawQueue = await rawSender.call<PhaseSamples>('queue', { count: cfg.drain, inflight: 256, maxMs: cfg.phaseCapMs }, cfg.phaseCapMs + 30_000)
  const rawDrain = await rawSender.call<{ drainMs: number, delivered: number }>('drain', { target: rawReceiver.ready.multiaddr, maxMs: 120_000 }, 150_000)
  const drains: Record<'mesh' | 'raw', DrainResult> = {
    mesh: { queue: meshQueue, ...meshDrain },
    raw: { queue: rawQueue, ...rawDrain }
  }
  // the receiver's own counter misses what arrived while it was starting: the inbox is the judge
  const exactlyOnce = meshDrain.delivered === cfg.drain && after.duplicates === 0 && after.unread === before.unread + cfg.drain
  if (!exactlyOnce) ctx.log(`WARNING: drain delivered ${meshDrain.delivered}, receiver saw ${after.received} arrive (${after.duplicates} twice), unread ${before.unread} → ${after.unread}`)

  const merge = (parts: Measured[]) => {
    const completed = parts.reduce((n, p) => n + p.completed, 0)
    const elapsedMs = parts.reduce((n, p) => n + p.elapsedMs, 0)
    const senderCpuUs = parts.reduce((n, p) => n + p.cpuUs, 0)
    const receiverCpuUs = parts.reduce((n, p) => n + p.peerCpuUs, 0)
    const senderLoopBusyMs = parts.reduce((n, p) => n + p.loopBusyMs, 0)
    const receiverLoopBusyMs = parts.reduce((n, p) => n + p.peerLoopBusyMs, 0)
    return {
      completed,
      elapsedMs,
      throughput: completed / (elapsedMs / 1000),
      summary: summarize(parts.flatMap(p => p.latencies)),
      cpuPerMessage: (senderCpuUs + receiverCpuUs) / completed,
      senderCpuPerMessage: senderCpuUs / completed,
      receiverCpuPerMessage: receiverCpuUs / completed,
      senderLoopBusy: senderLoopBusyMs / elapsedMs,
      receiverLoopBusy: receiverLoopBusyMs / elapsedMs
    }
  }
  type Merged = ReturnType<typeof merge>
  const rounds = (parts: Measured[], pick: (m: Merged) => number): number[] => parts.map(part => pick(merge([part])))
  const rate = (m: Merged): number => m.throughput
  const L = { mesh: merge(load.mesh), raw: merge(load.raw), stream: merge(load.stream) }
  const S = { mesh: merge(seq.mesh), raw: merge(seq.raw), stream: merge(seq.stream) }
  const D = { mesh: merge([deep.mesh]), raw: merge([deep.raw]) }
  const M = { mesh: merge([mixed.mesh]), raw: merge([mixed.raw]) }
  const detail = (x: Merged) => ({
    completed: x.completed,
    elapsedMs: round(x.elapsedMs),
    throughput: round(x.throughput),
    latencyMs: Object.fromEntries(Object.entries(x.summary).map(([k, v]) => [k, round(v)])),
    cpuUsPerMessage: { sender: round(x.senderCpuPerMessage), receiver: round(x.receiverCpuPerMessage) },
    /** Share of the phase each side's main thread was busy: near 1 means that side is the limit. */
    eventLoopBusy: { sender: round(x.senderLoopBusy), receiver: round(x.receiverLoopBusy) }
  })
  const queueRate = (q: PhaseSamples): number => q.completed / (q.elapsedMs / 1000)

  return {
    title: `durable send → acked, one pair of processes on 127.0.0.1, ${frameSize}-byte frames, fsync on both sides`,
    baseline: 'raw durable: same libp2p stack, one reused stream, frame synced into LevelDB (group commit) before sending, receiver syncs it into LevelDB (group commit) then acks that frame, sender deletes it (synced); "vs stream": the same frames acked one by one with no storage',
    config: { ...cfg, frameBytes: frameSize, bodyBytes: JSON.stringify(BODY).length, order: 'ABBA across rounds, merged' },
    figures: {
      throughput: figure({ label: `throughput, ${cfg.inflight} outstanding`, unit: 'msg/s', better: 'higher', value: L.mesh.throughput, baseline: L.raw.throughput, goalValue: THROUGHPUT_GOAL, roundValues: rounds(load.mesh, rate), roundBaselines: rounds(load.raw, rate) }),
      throughput_vs_stream: figure({ label: 'throughput vs raw stream (no storage)', unit: 'msg/s', better: 'higher', value: L.mesh.throughput, baseline: L.stream.throughput, roundValues: rounds(load.mesh, rate), roundBaselines: rounds(load.stream, rate) }),
      load_p50_ms: figure({ label: `send → delivered p50, ${cfg.inflight} outstanding`, unit: 'ms', better: 'lower', value: L.mesh.summary.p50, baseline: L.raw.summary.p50 }),
      load_p99_ms: figure({ label: `send → delivered p99, ${cfg.inflight} outstanding`, unit: 'ms', better: 'lower', value: L.mesh.summary.p99, baseline: L.raw.summary.p99 }),
      load_cpu_us: figure({ label: 'CPU per message, sender+receiver', unit: 'µs', better: 'lower', value: L.mesh.cpuPerMessage, baseline: L.raw.cpuPerMessage }),
      deep_throughput: figure({ label: `throughput, ${cfg.deepInflight} outstanding (one round)`, unit: 'msg/s', better: 'higher', value: D.mesh.throughput, baseline: D.raw.throughput }),
      mixed_throughput: figure({ label: `throughput, mixed priorities, ${cfg.inflight} outstanding (one round)`, unit: 'msg/s', better: 'higher', value: M.mesh.throughput, baseline: M.raw.throughput }),
      seq_p50_ms: figure({ label: 'send → delivered p50, one at a time', unit: 'ms', better: 'lower', value: S.mesh.summary.p50, baseline: S.raw.summary.p50 }),
      seq_p99_ms: figure({ label: 'send → delivered p99, one at a time', unit: 'ms', better: 'lower', value: S.mesh.summary.p99, baseline: S.raw.summary.p99 }),
      queue_rate: figure({ label: 'send() while offline (synced), 256 concurrent', unit: 'msg/s', better: 'higher', value: queueRate(drains.mesh.queue), baseline: queueRate(drains.raw.queue) }),
      drain_s: figure({ label: `drain ${cfg.drain} queued after reconnect`, unit: 's', better: 'lower', value: drains.mesh.drainMs / 1000, baseline: drains.raw.drainMs / 1000, goalValue: DRAIN_GOAL_S })
    },
    details: {
      load: { mesh: detail(L.mesh), raw: detail(L.raw), stream: detail(L.stream) },
      sequential: { mesh: detail(S.mesh), raw: detail(S.raw), stream: detail(S.stream) },
      deep: { mesh: detail(D.mesh), raw: detail(D.raw) },
      mixed: { mesh: detail(M.mesh), raw: detail(M.raw) },
      drain: {
        mesh: { drainMs: round(drains.mesh.drainMs), delivered: drains.mesh.delivered, queueMsgPerS: round(queueRate(drains.mesh.queue)), sendP99Ms: round(summarize(drains.mesh.queue.latencies).p99) },
        raw: { drainMs: round(drains.raw.drainMs), delivered: drains.raw.delivered, queueMsgPerS: round(queueRate(drains.raw.queue)), sendP99Ms: round(summarize(drains.raw.queue.latencies).p99) },
        receiverAfterRestart: after,
        exactlyOnce
      }
    }
  }
}

export const benchmark: Benchmark = {
  name: 'delivery',
  description: 'durable send → acked throughput/latency and drain after reconnect vs a raw durable libp2p pipe',
  run
}

// ---- roles ---------------------------------------------------------------------------------------

const DURABLE_PROTOCOL = '/persona-mesh-bench/durable/1.0.0'
const STREAM_PROTOCOL = '/persona-mesh-bench/acked/1.0.0'
/** Frames in flight on one stream while draining (the mesh's DELIVERY_WINDOW). */
const DRAIN_WINDOW = 256
const DRAIN_PAGE = 1024
const MAX_FRAME = 256 * 1024
/** One read may carry many frames (hundreds in flight). */
const MAX_BUFFER = 64 * 1024 * 1024

async function rawLibs () {
  await import('@persona-mesh/node/polyfill') // Node 20: before libp2p
  const raw = await import('../lib/raw-libp2p.js')
  const { LengthPrefixedDecoder } = await import('@libp2p/utils')
  const { multiaddr } = await import('@multiformats/multiaddr')
  return { raw, LengthPrefixedDecoder, multiaddr }
}

interface RawLevel {
  open (): Promise<void>
  close (): Promise<void>
  batch (ops: Array<{ type: 'put', key: string, value: Uint8Array } | { type: 'del', key: string }>, options: { sync: boolean }): Promise<void>
  iterator (options: { gte?: string, gt?: string, lt?: string }): { nextv (n: number): Promise<Array<[string, Uint8Array]>>, close (): Promise<void> }
}

/** `level`, as the store uses it (a dependency of @persona-mesh/store, not of the bench). */
async function openRawLevel (name: string): Promise<{ db: RawLevel, dir: string }> {
  const repo = resolve(dirname(fileURLToPath(import.meta.url)), '../../../..')
  const { Level } = createRequire(join(repo, 'packages/store/package.json'))('level') as { Level: new (path: string, options: object) => RawLevel }
  const dir = await mkdtemp(join(process.env[TMP_ROOT_ENV] || tmpdir(), `pmesh-bench-${name}-`))
  const db = new Level(dir, { keyEncoding: 'utf8', valueEncoding: 'view' })
  await db.open()
  return { db, dir }
}

type RawOp = { type: 'put', key: string, value: Uint8Array } | { type: 'del', key: string }

/** Group commit, the plain way: whatever arrives while a synced batch is in flight goes in the next one. */
class GroupCommit {
  private queue: Array<{ ops: RawOp[], resolve (): void, reject (err: unknown): void }> = []
  private running = false

  constructor (private readonly db: RawLevel) {}

  write (ops: RawOp[]): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.queue.push({ ops, resolve, reject })
      if (!this.running) {
        this.running = true
        queueMicrotask(() => { void this.run() })
      }
    })
  }

  private async run (): Promise<void> {
    while (this.queue.length > 0) {
      const taken = this.queue.splice(0)
      try {
        await this.db.batch(taken.length === 1 ? taken[0].ops : taken.flatMap(t => t.ops), { sync: true })
        for (const t of taken) t.resolve()
      } catch (err) {
        for (const t of taken) t.reject(err)
      }
    }
    this.running = false
  }
}

const pad = (n: number): string => String(n).padStart(16, '0')

export const roles: Record<string, RoleFactory> = {
  'mesh-receiver': async (args: { home: string }) => {
    const { createMeshNode } = await loadMeshModule()
    const node = await createMeshNode({ name: 'bench-receiver', home: args.home, listen: ['/ip4/127.0.0.1/tcp/0'], mdns: false })
    const seen = new Set<string>()
    let duplicates = 0
    node.addEventListener('message:received', (evt) => {
      if (seen.has(evt.detail.id)) duplicates++
      else seen.add(evt.detail.id)
    })
    return {
      ready: { multiaddr: loopbackAddr(node.multiaddrs), peerId: node.peerId },
      methods: {
        count: async () => ({ received: seen.size, duplicates, unread: (await node.status()).inbox.unread })
      },
      close: async () => { await node.stop() }
    }
  },

  'mesh-sender': async () => {
    const { node, close } = await startMeshNode('bench-sender')
    const { createEnvelope, sealEnvelope } = await import('@persona-mesh/protocol')
    const { loadOrCreateIdentity } = await loadMeshModule()
    // the size of a sealed envelope of this body, for the raw frames
    const keyDir = await mkdtemp(join(process.env[TMP_ROOT_ENV] || tmpdir(), 'pmesh-bench-key-'))
    const { privateKey } = await loadOrCreateIdentity(keyDir)
    await rm(keyDir, { recursive: true, force: true })
    const { peerIdFromPrivateKey } = await import('@libp2p/peer-id')
    const me = peerIdFromPrivateKey(privateKey).toString()
    const frameSize = (await sealEnvelope(createEnvelope({ from: me, to: node.peerId, body: BODY, seq: 123456 }), privateKey)).byteLength

    const waiters = new Map<string, () => void>()
    const early = new Set<string>()
    let queued = new Set<string>()
    let queuedTotal = 0
    let lastDeliveredAt = 0
    let drained: (() => void) | undefined
    let failures = 0
    node.addEventListener('message:delivered', (evt) => {
      const id = evt.detail.id
      if (queued.delete(id)) {
        lastDeliveredAt = Date.now()
        if (queued.size === 0) drained?.()
        return
      }
      const w = waiters.get(id)
      if (w !== undefined) {
        waiters.delete(id)
        w()
      } else {
        early.add(id)
      }
    })
    for (const type of ['message:failed', 'message:expired'] as const) {
      node.addEventListener(type, (evt) => {
        failures++
        process.stderr.write(`${type} ${evt.detail.id}: ${evt.detail.reason}\n`)
      })
    }
    const delivered = async (id: string): Promise<void> => {
      if (early.delete(id)) return
      await new Promise<void>((resolve) => { waiters.set(id, resolve) })
    }
    return {
      ready: { frameSize },
      methods: {
        dial: async (params: { target: string }) => { await node.dial(params.target) },
        phase: async (params: PhaseParams & { to: string, mixed?: boolean }) => {
          let n = 0
          const samples = await runPhase(async () => {
            // mixed: one send in ten `high`, one in ten `low` (each overtakes or trails the rest of the queue)
            const priority = params.mixed !== true ? undefined : n % 10 === 0 ? 'high' : n % 10 === 5 ? 'low' : 'normal'
            n++
            const { id } = await node.send(params.to, BODY, priority === undefined ? {} : { priority })
            await delivered(id)
          }, params)
          if (failures > 0) throw new Error(`${failures} messages failed or expired`)
          return samples
        },
        queue: async (params: PhaseParams & { to: string }) => {
          queued = new Set()
          const samples = await runPhase(async () => {
            const { id } = await node.send(params.to, BODY)
            queued.add(id)
          }, params)
          queuedTotal = queued.size
          return samples
        },
        drain: async (params: { target: string, maxMs: number, since: number }) => {
          const done = new Promise<void>((resolve) => { drained = resolve })
          if (queued.size === 0) drained?.()
          await node.dial(params.target)
          let timer: ReturnType<typeof setTimeout> | undefined
          await Promise.race([done, new Promise<void>((resolve) => { timer = setTimeout(resolve, params.maxMs) })])
          clearTimeout(timer)
          const end = queued.size === 0 ? lastDeliveredAt : Date.now()
          return { drainMs: end - params.since, delivered: queuedTotal - queued.size }
        }
      },
      close
    }
  },

  'raw-receiver': async () => {
    const { raw, LengthPrefixedDecoder } = await rawLibs()
    const node = await raw.createRawNode()
    await node.start()
    const { db, dir } = await openRawLevel('raw-receiver')
    const commit = new GroupCommit(db)
    let received = 0
    const serve = (durable: boolean) => (stream: import('@libp2p/interface').Stream): void => {
      const decoder = new LengthPrefixedDecoder({ maxDataLength: MAX_FRAME, maxBufferSize: MAX_BUFFER })
      stream.addEventListener('message', (evt) => {
        try {
          for (const f of decoder.decode(evt.data)) {
            const bytes = f.subarray()
            const ack = raw.frame(bytes.subarray(0, 4))
            if (!durable) {
              stream.send(ack)
              continue
            }
            const key = `${pad(++received)}`
            commit.write([{ type: 'put', key, value: bytes }]).then(() => { if (stream.writeStatus === 'writable') stream.send(ack) }, (err) => { stream.abort(err as Error) })
          }
        } catch (err) {
          stream.abort(err as Error)
        }
      })
    }
    const limits = { maxInboundStreams: 16, maxOutboundStreams: 16 }
    await node.handle(DURABLE_PROTOCOL, serve(true), limits)
    await node.handle(STREAM_PROTOCOL, serve(false), limits)
    return {
      ready: { multiaddr: loopbackAddr(node.getMultiaddrs().map(String)) },
      methods: {},
      close: async () => {
        await node.stop()
        await db.close()
        await rm(dir, { recursive: true, force: true })
      }
    }
  },

  'raw-sender': async (args: { target: string, frameSize: number }) => {
    const { raw, LengthPrefixedDecoder, multiaddr } = await rawLibs()
    const node = await raw.createRawNode()
    await node.start()
    const { db, dir } = await openRawLevel('raw-sender')
    const commit = new GroupCommit(db)
    const payload = new Uint8Array(args.frameSize).fill(120)
    let nextId = 0

    /** One reused stream; each frame is a 4-byte id + the payload; each ack is the id. */
    class AckedStream {
      readonly pending = new Map<number, () => void>()
      private readonly decoder = new LengthPrefixedDecoder({ maxDataLength: MAX_FRAME, maxBufferSize: MAX_BUFFER })
      constructor (readonly stream: import('@libp2p/interface').Stream) {
        stream.addEventListener('message', (evt) => {
          for (const f of this.decoder.decode(evt.data)) {
            const b = f.subarray()
            const id = new DataView(b.buffer, b.byteOffset, 4).getUint32(0)
            const w = this.pending.get(id)
            this.pending.delete(id)
            w?.()
          }
        })
      }

      static async open (protocol: string): Promise<AckedStream> {
        const stream = await node.dialProtocol(multiaddr(args.target), protocol, { signal: AbortSignal.timeout(10_000) })
        return new AckedStream(stream)
      }

      async send (id: number, body: Uint8Array): Promise<void> {
        const bytes = new Uint8Array(body.byteLength)
        bytes.set(body)
        new DataView(bytes.buffer).setUint32(0, id)
        const acked = new Promise<void>((resolve) => { this.pending.set(id, resolve) })
        if (!this.stream.send(raw.frame(bytes))) await this.stream.onDrain()
        await acked
      }
    }

    await node.dial(multiaddr(args.target), { signal: AbortSignal.timeout(10_000) })
    const durable = await AckedStream.open(DURABLE_PROTOCOL)
    const plain = await AckedStream.open(STREAM_PROTOCOL)
    const body = (): Uint8Array => payload
    return {
      methods: {
        phase: async (params: PhaseParams & { durable: boolean }) => {
          if (!params.durable) {
            return await runPhase(async () => { await plain.send(++nextId >>> 0, body()) }, params)
          }
          return await runPhase(async () => {
            const id = ++nextId >>> 0
            const key = `m${pad(id)}`
            await commit.write([{ type: 'put', key, value: body() }])
            await durable.send(id, body())
            await commit.write([{ type: 'del', key }])
          }, params)
        },
        queue: async (params: PhaseParams) => {
          return await runPhase(async () => {
            const id = ++nextId >>> 0
            await commit.write([{ type: 'put', key: `q${pad(id)}`, value: body() }])
          }, params)
        },
        drain: async (params: { maxMs: number }) => {
          // a fresh connection, like the mesh sender's after the receiver came back
          await node.hangUp(multiaddr(args.target))
          const t0 = performance.now()
          await node.dial(multiaddr(args.target), { signal: AbortSignal.timeout(10_000) })
          const ch = await AckedStream.open(DURABLE_PROTOCOL)
          let open = 0
          let delivered = 0
          let wake: (() => void) | undefined
          const deadline = t0 + params.maxMs
          let after: string | undefined
          for (;;) {
            const it = db.iterator(after === undefined ? { gte: 'q', lt: 'r' } : { gt: after, lt: 'r' })
            const page = await it.nextv(DRAIN_PAGE)
            await it.close()
            if (page.length === 0 || performance.now() > deadline) break
            after = page[page.length - 1][0]
            for (const [key, value] of page) {
              while (open >= DRAIN_WINDOW) await new Promise<void>((resolve) => { wake = resolve })
              open++
              const id = Number(key.slice(1)) >>> 0
              void ch.send(id, value)
                .then(async () => { await commit.write([{ type: 'del', key }]) })
                .then(() => { delivered++ }, () => {})
                .finally(() => { open--; const w = wake; wake = undefined; w?.() })
            }
          }
          while (open > 0) await new Promise<void>((resolve) => { wake = resolve })
          return { drainMs: performance.now() - t0, delivered }
        }
      },
      close: async () => {
        await node.stop()
        await db.close()
        await rm(dir, { recursive: true, force: true })
      }
    }
  }
}
