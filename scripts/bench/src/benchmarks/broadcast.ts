/**
 * broadcast: one publisher, 10 subscribers (2 worker processes × 5 nodes) on 127.0.0.1.
 *
 * Mesh: `createMeshNode` per node, `subscribe(topic)`, `broadcast(topic, body)`; a subscriber
 * counts a message when its `message:received` event fires (the envelope is verified and taken
 * into its inbox). Baseline: raw libp2p with the same stack and versions (TCP + Noise + Yamux +
 * identify + ping + @libp2p/gossipsub, StrictSign, emitSelf off), `publish(topic,
 * bytes)` of a payload as large as the mesh's sealed envelope; counted on the pubsub `message`
 * event. Same topology for both: every subscriber dials the publisher and three other subscribers.
 *
 * Both sides authenticate each message once: raw gossipsub signs it (StrictSign) and every receiver
 * verifies that; the mesh runs gossipsub StrictNoSign and signs the envelope, which every receiver's
 * topic validator verifies.
 *
 * Latency is from the publish call to the receive event, across processes on one machine
 * (`performance.timeOrigin + performance.now()`, sub-millisecond). Messages go out at a fixed
 * interval (not a flood: this is latency on a stable mesh); rounds alternate raw and mesh (ABBA).
 * Delivery ratio: receipts / (messages × subscribers), counted after a grace period.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { figure } from '../lib/figure.js'
import { loadMeshModule, loopbackAddr, startMeshNode, TMP_ROOT_ENV } from '../lib/mesh.js'
import type { BenchContext, Benchmark, BenchResult, RoleFactory } from '../lib/registry.js'
import { round, summarize } from '../lib/stats.js'
import type { Worker } from '../lib/workers.js'

const TOPIC = 'bench'
const RAW_TOPIC = 'persona-mesh-bench/broadcast'
const PAD = 'x'.repeat(500)
const P99_GOAL = 1.2

interface Config {
  processes: number
  perProcess: number
  /** Other subscribers each subscriber dials (besides the publisher). */
  links: number
  warmup: number
  messages: number
  intervalMs: number
  rounds: number
  /** How long after the last publish receipts still count. */
  graceMs: number
}

/**
 * 10 subscribers + the publisher: 11 nodes on one IP. gossipsub's default peer scoring penalises
 * more than 10 peers sharing an IP (IPColocationFactorThreshold 10, weight -5): beyond that every
 * peer is graylisted and nothing is delivered, raw or mesh, and mesh nodes discover and connect to
 * every other mesh node. `PMESH_BENCH_BROADCAST_LAYOUT=4x4` (processes × nodes) shows it.
 */
const LAYOUT = (process.env.PMESH_BENCH_BROADCAST_LAYOUT ?? '2x5').split('x').map(Number)
const [PROCESSES, PER_PROCESS] = LAYOUT.length === 2 && LAYOUT.every(n => Number.isInteger(n) && n > 0 && n <= 10) ? LAYOUT : [2, 5]
const FULL: Config = { processes: PROCESSES, perProcess: PER_PROCESS, links: 3, warmup: 40, messages: 600, intervalMs: 25, rounds: 4, graceMs: 3000 }
const QUICK: Config = { processes: PROCESSES, perProcess: PER_PROCESS, links: 3, warmup: 20, messages: 200, intervalMs: 25, rounds: 2, graceMs: 2000 }

type Side = 'mesh' | 'raw'

/** Epoch milliseconds with sub-millisecond resolution, comparable across processes on one host. */
function nowMs (): number {
  return performance.timeOrigin + performance.now()
}

/** Deterministic pseudo-random numbers, so the topology is the same for both sides and every run. */
function prng (seed: number): () => number {
  let a = seed
  return () => {
    a = (a + 0x6D2B79F5) | 0
    let t = Math.imul(a ^ (a >>> 15), 1 | a)
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/** For each subscriber (global index), the other subscribers it dials. */
function topology (count: number, links: number): number[][] {
  const rnd = prng(42)
  return Array.from({ length: count }, (_, i) => {
    const picks = new Set<number>()
    for (let guard = 0; picks.size < Math.min(links, count - 1) && guard < 1000; guard++) {
      const j = Math.floor(rnd() * count)
      if (j !== i) picks.add(j)
    }
    return [...picks]
  })
}

interface RunSamples {
  /** Per subscriber node: [message index, latency ms]. */
  receipts: Array<Array<[number, number]>>
}

async function run (ctx: BenchContext): Promise<BenchResult> {
  const cfg = ctx.quick ? QUICK : FULL
  const total = cfg.processes * cfg.perProcess
  ctx.log(`starting the publisher and ${cfg.processes} processes × ${cfg.perProcess} subscribers (mesh and raw nodes in each)`)
  const publisher = await ctx.spawn('publisher', {}, { readyTimeoutMs: 60_000 })
  const groups: Worker[] = []
  for (let p = 0; p < cfg.processes; p++) groups.push(await ctx.spawn('subscribers', { count: cfg.perProcess, index: p }, { readyTimeoutMs: 90_000 }))
  const sides: Side[] = ['raw', 'mesh']
  const addrs: Record<Side, string[]> = { mesh: groups.flatMap(g => g.ready.mesh as string[]), raw: groups.flatMap(g => g.ready.raw as string[]) }
  const links = topology(total, cfg.links)
  for (const side of sides) {
    // every subscriber dials the publisher and a few others: the same graph for both sides
    for (let p = 0; p < cfg.processes; p++) {
      const targets = Array.from({ length: cfg.perProcess }, (_, k) => {
        const i = p * cfg.perProcess + k
        return [publisher.ready[side] as string, ...links[i].map(j => addrs[side][j])]
      })
      await groups[p].call('connect', { side, targets }, 60_000)
    }
  }
  const notes: string[] = []
  ctx.log('waiting for both meshes to form (every subscriber in the topic mesh)')
  for (const side of sides) {
    const deadline = Date.now() + 30_000
    for (;;) {
      const counts = (await Promise.all(groups.map(async g => await g.call<number[]>('meshPeers', { side }, 10_000)))).flat()
      const known = await publisher.call<number>('subscribers', { side }, 10_000)
      if (known >= total && counts.every(n => n > 0)) break
      if (Date.now() > deadline) {
        const note = `${side}: the topic mesh did not form within 30 s (mesh peers per subscriber ${counts.join(',')}; the publisher knows ${known} of ${total} subscribers); measuring anyway`
        ctx.log(`WARNING: ${note}`)
        notes.push(note)
        break
      }
      await new Promise(resolve => setTimeout(resolve, 500))
    }
  }

  let runId = 0
  const phase = async (side: Side, count: number): Promise<{ latencies: number[], received: number, expected: number, publishMs: number[] }> => {
    if (ctx.signal.aborted) throw new Error('interrupted')
    const id = ++runId
    const sent = await publisher.call<{ publishMs: number[], reached: number[] }>('publish', { side, runId: id, count, intervalMs: cfg.intervalMs }, count * cfg.intervalMs + 60_000)
    await new Promise(resolve => setTimeout(resolve, cfg.graceMs))
    const collected = await Promise.all(groups.map(async g => await g.call<RunSamples>('collect', { side, runId: id }, 30_000)))
    const latencies: number[] = []
    let received = 0
    for (const group of collected) {
      for (const node of group.receipts) {
        const seen = new Set<number>()
        for (const [i, ms] of node) {
          if (seen.has(i)) continue
          seen.add(i)
          received++
          latencies.push(ms)
        }
      }
    }
    return { latencies, received, expected: count * total, publishMs: sent.publishMs }
  }

  ctx.log(`warm-up: ${cfg.warmup} messages each side`)
  for (const side of sides) await phase(side, cfg.warmup)
  const parts: Record<Side, Array<Awaited<ReturnType<typeof phase>>>> = { mesh: [], raw: [] }
  const perRound = Math.ceil(cfg.messages / cfg.rounds)
  for (let r = 0; r < cfg.rounds; r++) {
    const order: Side[] = r % 2 === 0 ? ['raw', 'mesh'] : ['mesh', 'raw']
    ctx.log(`round ${r + 1}/${cfg.rounds}: ${order.join(', ')}: ${perRound} messages every ${cfg.intervalMs} ms`)
    for (const side of order) parts[side].push(await phase(side, perRound))
  }
  const merge = (ps: typeof parts.mesh) => {
    const received = ps.reduce((n, p) => n + p.received, 0)
    const expected = ps.reduce((n, p) => n + p.expected, 0)
    return { summary: summarize(ps.flatMap(p => p.latencies)), received, expected, ratio: received / expected, publish: summarize(ps.flatMap(p => p.publishMs)) }
  }
  const m = { mesh: merge(parts.mesh), raw: merge(parts.raw) }
  const roundP = (ps: typeof parts.mesh, q: 'p50' | 'p99'): number[] => ps.map(p => summarize(p.latencies)[q])
  const detail = (x: typeof m.mesh) => ({
    received: x.received,
    expected: x.expected,
    deliveryRatio: round(x.ratio),
    latencyMs: Object.fromEntries(Object.entries(x.summary).map(([k, v]) => [k, round(v)])),
    publishCallMs: Object.fromEntries(Object.entries(x.publish).map(([k, v]) => [k, round(v)]))
  })
  return {
    title: `broadcast to ${total} subscribers (${cfg.processes} processes × ${cfg.perProcess} nodes), 1 publisher, a message every ${cfg.intervalMs} ms, 127.0.0.1`,
    baseline: 'raw @libp2p/gossipsub (same stack and versions, StrictSign: each message signed and verified once, as the mesh signs and verifies its envelopes), same topology, payload as large as the mesh envelope',
    config: { ...cfg, subscribers: total, order: 'ABBA across rounds, merged' },
    figures: {
      p50_ms: figure({ label: 'publish → received p50', unit: 'ms', better: 'lower', value: m.mesh.summary.p50, baseline: m.raw.summary.p50, roundValues: roundP(parts.mesh, 'p50'), roundBaselines: roundP(parts.raw, 'p50') }),
      p99_ms: figure({ label: 'publish → received p99', unit: 'ms', better: 'lower', value: m.mesh.summary.p99, baseline: m.raw.summary.p99, goalRatio: P99_GOAL, roundValues: roundP(parts.mesh, 'p99'), roundBaselines: roundP(parts.raw, 'p99') }),
      delivered_ratio: figure({ label: 'delivered (receipts / messages × subscribers)', unit: 'ratio', better: 'higher', value: m.mesh.ratio, baseline: m.raw.ratio, goalValue: 1 })
    },
    details: { mesh: detail(m.mesh), raw: detail(m.raw) },
    notes: [`${total} subscribers in ${cfg.processes} processes; each process runs its mesh and its raw nodes side by side, only one side publishes at a time`, ...notes]
  }
}

export const benchmark: Benchmark = {
  name: 'broadcast',
  description: 'mesh.broadcast latency p50/p99 and delivery ratio to 10 subscribers vs raw gossipsub',
  run
}

// ---- roles ---------------------------------------------------------------------------------------

async function rawGossipNode () {
  await import('@persona-mesh/node/polyfill') // Node 20: before libp2p
  const { noise } = await import('@chainsafe/libp2p-noise')
  const { yamux } = await import('@chainsafe/libp2p-yamux')
  const { identify } = await import('@libp2p/identify')
  const { ping } = await import('@libp2p/ping')
  const { tcp } = await import('@libp2p/tcp')
  const { gossipsub } = await import('@libp2p/gossipsub')
  const { createLibp2p } = await import('libp2p')
  const node = await createLibp2p({
    addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
    transports: [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    connectionManager: { inboundConnectionThreshold: 100, maxConnections: 300 },
    services: {
      identify: identify(),
      ping: ping({ maxInboundStreams: 32, maxOutboundStreams: 32 }),
      // as createMeshNode configures it
      pubsub: gossipsub({ globalSignaturePolicy: 'StrictSign', allowPublishToZeroTopicPeers: true, emitSelf: false })
    }
  })
  await node.start()
  return node
}

type RawGossipNode = Awaited<ReturnType<typeof rawGossipNode>>

/** Peers in our gossipsub mesh for `topic` (the implementation has it; the interface does not). */
function meshPeers (pubsub: unknown, topic: string): number {
  return (pubsub as { getMeshPeers(topic: string): string[] }).getMeshPeers(topic).length
}

const encoder = new TextEncoder()
const decoder = new TextDecoder()

interface Body { r: number, i: number, t: number, pad: string }

export const roles: Record<string, RoleFactory> = {
  publisher: async () => {
    const { node: mesh, close } = await startMeshNode('bench-pub')
    const raw = await rawGossipNode()
    // the raw payload is as large as the mesh's sealed envelope of the same body
    const { createEnvelope, sealEnvelope, USER_TOPIC_PREFIX } = await import('@persona-mesh/protocol')
    const { loadOrCreateIdentity } = await loadMeshModule()
    const keyDir = await mkdtemp(join(process.env[TMP_ROOT_ENV] || tmpdir(), 'pmesh-bench-key-'))
    const { privateKey } = await loadOrCreateIdentity(keyDir)
    await rm(keyDir, { recursive: true, force: true })
    const sample: Body = { r: 1, i: 1, t: nowMs(), pad: PAD }
    const sealed = await sealEnvelope(createEnvelope({ kind: 'broadcast', from: (await import('@libp2p/peer-id')).peerIdFromPrivateKey(privateKey).toString(), to: `topic:${TOPIC}`, body: sample as any, seq: 123456, ttl: 86_400_000 }), privateKey)
    const rawExtra = Math.max(0, sealed.byteLength - encoder.encode(JSON.stringify(sample)).byteLength)
    await mesh.subscribe(TOPIC) // so the publisher is in the topic mesh too, like any member
    raw.services.pubsub.subscribe(RAW_TOPIC)
    const gossipTopic = USER_TOPIC_PREFIX + TOPIC
    return {
      ready: { mesh: loopbackAddr(mesh.multiaddrs), raw: loopbackAddr(raw.getMultiaddrs().map(String)), frameBytes: sealed.byteLength },
      methods: {
        subscribers: (params: { side: Side }) => params.side === 'mesh'
          ? mesh.libp2p.services.pubsub.getSubscribers(gossipTopic).length
          : raw.services.pubsub.getSubscribers(RAW_TOPIC).length,
        publish: async (params: { side: Side, runId: number, count: number, intervalMs: number }) => {
          const publishMs: number[] = []
          const reached: number[] = []
          const start = nowMs()
          for (let i = 0; i < params.count; i++) {
            // a fixed schedule: a slow publish does not delay the ones after it
            const due = start + i * params.intervalMs
            const wait = due - nowMs()
            if (wait > 0) await new Promise(resolve => setTimeout(resolve, wait))
            const t = nowMs()
            if (params.side === 'mesh') {
              const result = await mesh.broadcast(TOPIC, { r: params.runId, i, t, pad: PAD })
              reached.push(result.recipients)
            } else {
              const body = JSON.stringify({ r: params.runId, i, t, pad: PAD + 'x'.repeat(rawExtra) })
              const result = await raw.services.pubsub.publish(RAW_TOPIC, encoder.encode(body))
              reached.push(result.recipients.length)
            }
            publishMs.push(nowMs() - t)
          }
          return { publishMs, reached }
        }
      },
      close: async () => {
        await raw.stop()
        await close()
      }
    }
  },

  subscribers: async (args: { count: number, index: number }) => {
    const { multiaddr } = await import('@multiformats/multiaddr')
    const { USER_TOPIC_PREFIX } = await import('@persona-mesh/protocol')
    const gossipTopic = USER_TOPIC_PREFIX + TOPIC
    const meshNodes: Array<Awaited<ReturnType<typeof startMeshNode>>> = []
    const rawNodes: RawGossipNode[] = []
    /** side → run → per node receipts */
    const receipts: Record<Side, Map<number, Array<Array<[number, number]>>>> = { mesh: new Map(), raw: new Map() }
    const record = (side: Side, node: number, body: Body): void => {
      const latency = nowMs() - body.t
      let run = receipts[side].get(body.r)
      if (run === undefined) {
        run = Array.from({ length: args.count }, () => [])
        receipts[side].set(body.r, run)
      }
      run[node].push([body.i, Math.round(latency * 1000) / 1000])
    }
    try {
      for (let k = 0; k < args.count; k++) {
        const started = await startMeshNode(`bench-sub-${args.index}-${k}`)
        meshNodes.push(started)
        await started.node.subscribe(TOPIC)
        started.node.addEventListener('message:received', (evt) => {
          const e = evt.detail
          if (e.kind === 'broadcast' && e.topic === TOPIC) record('mesh', k, e.body as unknown as Body)
        })
        const raw = await rawGossipNode()
        rawNodes.push(raw)
        raw.services.pubsub.subscribe(RAW_TOPIC)
        raw.services.pubsub.addEventListener('message', (evt) => {
          if (evt.detail.topic !== RAW_TOPIC) return
          record('raw', k, JSON.parse(decoder.decode(evt.detail.data)) as Body)
        })
      }
    } catch (err) {
      await Promise.allSettled([...meshNodes.map(async n => { await n.close() }), ...rawNodes.map(async n => { await n.stop() })])
      throw err
    }
    return {
      ready: {
        mesh: meshNodes.map(n => loopbackAddr(n.node.multiaddrs)),
        raw: rawNodes.map(n => loopbackAddr(n.getMultiaddrs().map(String)))
      },
      methods: {
        connect: async (params: { side: Side, targets: string[][] }) => {
          await Promise.all(params.targets.map(async (list, k) => {
            for (const target of list) {
              if (params.side === 'mesh') await meshNodes[k].node.dial(target)
              else await rawNodes[k].dial(multiaddr(target), { signal: AbortSignal.timeout(10_000) })
            }
          }))
        },
        meshPeers: (params: { side: Side }) => params.side === 'mesh'
          ? meshNodes.map(n => meshPeers(n.node.libp2p.services.pubsub, gossipTopic))
          : rawNodes.map(n => meshPeers(n.services.pubsub, RAW_TOPIC)),
        collect: (params: { side: Side, runId: number }) => {
          const run = receipts[params.side].get(params.runId) ?? Array.from({ length: args.count }, () => [])
          receipts[params.side].delete(params.runId)
          return { receipts: run }
        }
      },
      close: async () => {
        await Promise.allSettled([...meshNodes.map(async n => { await n.close() }), ...rawNodes.map(async n => { await n.stop() })])
      }
    }
  }
}
