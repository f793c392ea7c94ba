/**
 * discovery: how fast personas find each other and what they can do.
 *
 * 1. Bootstrap on loopback: N nodes (default 10) start, all joining through the first one's
 *    address. Mesh: time from the first start until every node holds a verified card of every
 *    other. Baseline: N raw libp2p nodes with the same stack (kad-dht + gossipsub, bootstrap,
 *    discovered peers dialled): time until every node knows every other (peer store entry with
 *    an address). Rounds alternate raw/mesh (ABBA); every round starts fresh identities.
 * 2. mDNS (root only): 3 network namespaces on a bridge (test/netns/harness.ts), one worker per
 *    namespace (`ip netns exec … node …`), no bootstrap. Mesh: start → all cards verified.
 *    Baseline: raw nodes with @libp2p/mdns: start → connected to and identified by all others.
 *    mDNS never runs in the host namespace.
 * 3. find on a 20-node private DHT (4 processes × 5 nodes, per side), measured one query at a
 *    time on a node not connected to the provider when there is one:
 *    `mesh.find(<exact capability>)` (the DHT providers query run to its end, as find does with
 *    its default limit, plus a card lookup when the card is not cached) beside a raw kad-dht
 *    `findProviders` drained to its end; `find({limit: 1})` beside the raw first provider;
 *    local-index `find({dht: false})`; a DHT `get` of a card record beside a raw `get`.
 */
import { setMaxListeners } from 'node:events'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import type { MeshNode } from '@persona-mesh/node'
import type * as NetnsHarness from '../../../../test/netns/harness.js'
import type { Figure } from '../lib/figure.js'
import { figure } from '../lib/figure.js'
import { loadMeshModule, loopbackAddr, TMP_ROOT_ENV } from '../lib/mesh.js'
import type { RawStackNode } from '../lib/raw-stack.js'
import type { BenchContext, Benchmark, BenchResult, RoleFactory } from '../lib/registry.js'
import type { LatencySummary } from '../lib/stats.js'
import { round, summarize } from '../lib/stats.js'
import type { Worker } from '../lib/workers.js'
import { mdnsInNetns } from '../lib/workers.js'

type Kind = 'mesh' | 'raw'
type Criterion = 'cards' | 'known' | 'identified'
type FindMode = 'find' | 'find1' | 'local' | 'providers' | 'get'

interface Config {
  /** Nodes in the bootstrap discovery test. */
  nodes: number
  discoveryRounds: number
  mdnsRounds: number
  /** Nodes in the find DHT (per side). */
  dhtNodes: number
  /** Worker processes per side; nodes are spread round-robin across them. */
  processes: number
  /** Queries per mode per side per round. */
  finds: number
  findRounds: number
  /** Local-index queries per side per round (cheap). */
  localFinds: number
  /** No new query of a batch (one mode, one side, one round) starts after this long. */
  batchCapMs: number
  waitCapMs: number
}

const FULL: Config = { nodes: 10, discoveryRounds: 3, mdnsRounds: 4, dhtNodes: 20, processes: 4, finds: 20, findRounds: 2, localFinds: 300, batchCapMs: 4000, waitCapMs: 15_000 }
const QUICK: Config = { nodes: 6, discoveryRounds: 2, mdnsRounds: 2, dhtNodes: 12, processes: 3, finds: 12, findRounds: 1, localFinds: 100, batchCapMs: 4000, waitCapMs: 15_000 }

/** The goals from issue #3. */
const MDNS_GOAL_MS = 2000
const FIND_P95_GOAL_MS = 100
const QUERY_TIMEOUT_MS = 3000

const epochNow = (): number => performance.timeOrigin + performance.now()

interface StartedNode { peerId: string, addr: string, capability: string }
interface StartResult { begin: number, end: number, nodes: StartedNode[] }
type Reached = Array<Partial<Record<Criterion, number>>>

interface FindSample {
  ms: number
  /** Raw findProviders: when the provider came (drained queries run on). */
  firstMs?: number
  found: boolean
  /** Still connected to the target when the query started (after closing the connection). */
  connectedBefore: boolean
  cardCachedBefore?: boolean
  /** The searcher was connected to the target and hung up before the query. */
  hungUp: boolean
  /** The target's card was dropped from the searcher's in-memory index before the query. */
  evicted: boolean
}

// ---------------------------------------------------------------------------------------------
// parent side

async function run (ctx: BenchContext): Promise<BenchResult> {
  const cfg = ctx.quick ? QUICK : FULL
  const figures: Record<string, Figure> = {}
  const details: Record<string, unknown> = {}
  const notes: string[] = []

  ctx.log(`starting ${cfg.processes} host processes per side`)
  const hosts: Record<Kind, Worker[]> = { mesh: [], raw: [] }
  for (let i = 0; i < cfg.processes; i++) {
    hosts.raw.push(await ctx.spawn('host', { kind: 'raw' }))
    hosts.mesh.push(await ctx.spawn('host', { kind: 'mesh' }))
  }
  const cpuOf = async (workers: Worker[]): Promise<number> => (await Promise.all(workers.map(async w => (await w.usage()).cpuUs))).reduce((a, b) => a + b, 0)

  // ---- 1. bootstrap on loopback -------------------------------------------------------------
  const boot: Record<Kind, Array<{ ms: number, lastStartMs: number, cpuMs: number, secondary: Record<string, number | null> }>> = { mesh: [], raw: [] }
  for (let r = 0; r < cfg.discoveryRounds; r++) {
    const order: Kind[] = r % 2 === 0 ? ['raw', 'mesh'] : ['mesh', 'raw']
    for (const kind of order) {
      if (ctx.signal.aborted) throw new Error('interrupted')
      const workers = hosts[kind]
      const cpu0 = await cpuOf(workers)
      const t0 = epochNow()
      const first = await workers[0].call<StartResult>('start', { indices: [0], prefix: `b${r}` }, 30_000)
      const bootAddr = first.nodes[0].addr
      // the other N-1 nodes, round-robin across the processes, all at once
      const perWorker = workers.map((_, w) => Array.from({ length: cfg.nodes - 1 }, (_, i) => i + 1).filter(i => i % workers.length === w))
      const started = await Promise.all(workers.map(async (w, wi) => perWorker[wi].length === 0 ? undefined : await w.call<StartResult>('start', { indices: perWorker[wi], prefix: `b${r}`, bootstrap: [bootAddr] }, 30_000)))
      const lastStart = Math.max(...started.map(s => s?.end ?? 0))
      const criteria: Criterion[] = kind === 'mesh' ? ['cards', 'known', 'identified'] : ['known', 'identified']
      const reached = (await Promise.all(workers.map(async w => await w.call<Reached>('waitAll', { expected: cfg.nodes - 1, criteria, timeoutMs: cfg.waitCapMs }, cfg.waitCapMs + 15_000)))).flat()
      const primary = criteria[0]
      const done = reached.map(x => x[primary])
      if (done.some(t => t === undefined)) {
        const missing = done.filter(t => t === undefined).length
        notes.push(`bootstrap round ${r + 1} ${kind}: ${missing} of ${cfg.nodes} nodes did not reach "${primary}" (${cfg.nodes - 1} peers) within ${cfg.waitCapMs} ms; round left out`)
        ctx.log(`round ${r + 1}/${cfg.discoveryRounds} ${kind}: ${missing} nodes not there within ${cfg.waitCapMs} ms`)
        await Promise.all(workers.map(async w => await w.call('stopAll', {}, 30_000)))
        continue
      }
      const secondary: Record<string, number | null> = {}
      for (const c of criteria.slice(1)) {
        const ts = reached.map(x => x[c])
        secondary[c] = ts.some(t => t === undefined) ? null : round(Math.max(...(ts as number[])) - t0)
      }
      const ms = Math.max(...(done as number[])) - t0
      const cpuMs = (await cpuOf(workers) - cpu0) / 1000
      boot[kind].push({ ms, lastStartMs: lastStart - t0, cpuMs, secondary })
      ctx.log(`round ${r + 1}/${cfg.discoveryRounds} ${kind}: ${cfg.nodes} nodes, all ${primary} in ${ms.toFixed(0)} ms (CPU ${cpuMs.toFixed(0)} ms)`)
      await Promise.all(workers.map(async w => await w.call('stopAll', {}, 30_000)))
    }
  }
  const median = (xs: number[]): number => summarize(xs).p50
  const bootMs = (k: Kind): number[] => boot[k].map(x => x.ms)
  figures.bootstrap_all_cards_ms = figure({
    label: `bootstrap, ${cfg.nodes} nodes: start → all cards verified (raw: all peers known), median of rounds`,
    unit: 'ms',
    better: 'lower',
    value: median(bootMs('mesh')),
    baseline: median(bootMs('raw')),
    ...(bootMs('mesh').length === bootMs('raw').length ? { roundValues: bootMs('mesh'), roundBaselines: bootMs('raw') } : {})
  })
  figures.bootstrap_cpu_ms = figure({
    label: `bootstrap, ${cfg.nodes} nodes: CPU time of all processes, median of rounds`,
    unit: 'ms',
    better: 'lower',
    value: median(boot.mesh.map(x => x.cpuMs)),
    baseline: median(boot.raw.map(x => x.cpuMs))
  })
  details.bootstrap = {
    nodes: cfg.nodes,
    placement: `${cfg.processes} processes per side, nodes round-robin (the bootstrap node in the first)`,
    rounds: Object.fromEntries((['mesh', 'raw'] as const).map(k => [k, boot[k].map(x => ({ ms: round(x.ms), lastNodeStartedMs: round(x.lastStartMs), cpuMs: round(x.cpuMs), ...x.secondary }))]))
  }

  // ---- 2. mDNS in network namespaces --------------------------------------------------------
  try {
    const mdnsResult = await runMdns(ctx, cfg)
    if (mdnsResult.skipped !== undefined) {
      notes.push(`mDNS part skipped: ${mdnsResult.skipped}`)
      details.mdns = { skipped: mdnsResult.skipped }
    } else {
      const m = mdnsResult.rounds
      notes.push(...mdnsResult.timeouts)
      figures.mdns_all_cards_ms = figure({
        label: '3 hosts (netns), mDNS only: start → all cards verified (raw: connected+identified), median',
        unit: 'ms',
        better: 'lower',
        value: median(m.mesh),
        baseline: median(m.raw),
        goalValue: MDNS_GOAL_MS,
        ...(m.mesh.length === m.raw.length ? { roundValues: m.mesh, roundBaselines: m.raw } : {})
      })
      figures.mdns_all_cards_max_ms = figure({
        label: '3 hosts (netns), mDNS only: worst round',
        unit: 'ms',
        better: 'lower',
        value: Math.max(...m.mesh),
        baseline: Math.max(...m.raw),
        goalValue: MDNS_GOAL_MS
      })
      details.mdns = { placement: 'one worker process per network namespace (ip netns exec … node …), one node each, listening on 0.0.0.0', roundsMs: { mesh: m.mesh.map(round), raw: m.raw.map(round) }, meshIdentifiedMs: m.meshIdentified.map(round) }
    }
  } catch (err) {
    throw new Error(`mDNS part: ${(err as Error).message}`)
  }

  // ---- 3. find on a private DHT -------------------------------------------------------------
  const findOut = await runFind(ctx, cfg, hosts, cpuOf)
  Object.assign(figures, findOut.figures)
  details.find = findOut.details
  notes.push(...findOut.notes)

  return {
    title: `bootstrap (${cfg.nodes} nodes, loopback), mDNS (3 netns hosts), find on a ${cfg.dhtNodes}-node private DHT`,
    baseline: 'raw libp2p, same stack and versions (TCP+Noise+Yamux+identify+ping+kad-dht+gossipsub; bootstrap or mDNS; discovered peers dialled); raw kad-dht findProviders/get on a raw DHT of the same size',
    config: { ...cfg, mdnsGoalMs: MDNS_GOAL_MS, findP95GoalMs: FIND_P95_GOAL_MS, queryTimeoutMs: QUERY_TIMEOUT_MS },
    figures,
    details,
    notes: [`nodes share processes: ${cfg.processes} worker processes per side host the ${cfg.nodes} (bootstrap) and ${cfg.dhtNodes} (DHT) nodes round-robin; mDNS: one process per namespace`, ...notes]
  }
}

async function runMdns (ctx: BenchContext, cfg: Config): Promise<{ skipped: string } | { skipped?: undefined, timeouts: string[], rounds: { mesh: number[], raw: number[], meshIdentified: number[] } }> {
  // the harness is compiled next to dist/ by tsconfig.netns.json
  const harness = await import(new URL('../netns/harness.js', import.meta.url).href) as typeof NetnsHarness
  const availability = harness.netnsAvailability()
  if (!availability.ok) return { skipped: availability.reason }
  ctx.log('mDNS: creating 3 network namespaces on a bridge')
  const network = await harness.createNetwork({ hosts: 3, prefix: 'pmbn', subnet24: '10.212.0' })
  const workers: Worker[] = []
  try {
    for (const host of network.hosts) {
      for (const kind of ['mesh', 'raw'] as const) {
        workers.push(await ctx.spawn('host', { kind, mdns: true, listen: '/ip4/0.0.0.0/tcp/0', label: `${kind}-${host.index}` }, { netns: host.ns }))
      }
    }
    const byKind = (kind: Kind): Worker[] => workers.filter((_, i) => (i % 2 === 0) === (kind === 'mesh'))
    const rounds = { mesh: [] as number[], raw: [] as number[], meshIdentified: [] as number[] }
    const timeouts: string[] = []
    for (let r = 0; r < cfg.mdnsRounds; r++) {
      const order: Kind[] = r % 2 === 0 ? ['raw', 'mesh'] : ['mesh', 'raw']
      for (const kind of order) {
        if (ctx.signal.aborted) throw new Error('interrupted')
        const ws = byKind(kind)
        const starts = await Promise.all(ws.map(async (w, i) => await w.call<StartResult>('start', { indices: [i], prefix: `m${r}` }, 30_000)))
        const t0 = Math.min(...starts.map(s => s.begin))
        const criteria: Criterion[] = kind === 'mesh' ? ['cards', 'identified'] : ['identified']
        const reached = (await Promise.all(ws.map(async w => await w.call<Reached>('waitAll', { expected: ws.length - 1, criteria, timeoutMs: cfg.waitCapMs }, cfg.waitCapMs + 15_000)))).flat()
        await Promise.all(ws.map(async w => await w.call('stopAll', {}, 30_000)))
        const done = reached.map(x => x[criteria[0]])
        if (done.some(t => t === undefined)) {
          timeouts.push(`mDNS round ${r + 1} ${kind}: not every host reached "${criteria[0]}" within ${cfg.waitCapMs} ms; round left out`)
          continue
        }
        const ms = Math.max(...(done as number[])) - t0
        rounds[kind].push(ms)
        if (kind === 'mesh') {
          const ident = reached.map(x => x.identified)
          if (ident.every(t => t !== undefined)) rounds.meshIdentified.push(Math.max(...(ident as number[])) - t0)
        }
        ctx.log(`mDNS round ${r + 1}/${cfg.mdnsRounds} ${kind}: ${ms.toFixed(0)} ms`)
      }
    }
    return { rounds, timeouts }
  } finally {
    await Promise.all(workers.map(async w => { await w.close() }))
    await network.destroy()
  }
}

interface FindOut { figures: Record<string, Figure>, details: Record<string, unknown>, notes: string[] }

async function runFind (ctx: BenchContext, cfg: Config, hosts: Record<Kind, Worker[]>, cpuOf: (w: Worker[]) => Promise<number>): Promise<FindOut> {
  const n = cfg.dhtNodes
  const nodes: Record<Kind, StartedNode[]> = { mesh: [], raw: [] }
  const formation: Record<string, unknown> = {}
  const formedAt: Record<Kind, number> = { mesh: Number.NaN, raw: Number.NaN }
  const notes: string[] = []
  for (const kind of ['raw', 'mesh'] as const) {
    const workers = hosts[kind]
    ctx.log(`find: starting a ${n}-node ${kind} DHT (${workers.length} processes)`)
    const t0 = epochNow()
    const first = await workers[0].call<StartResult>('start', { indices: [0], prefix: 'f', capabilities: true }, 30_000)
    const perWorker = workers.map((_, w) => Array.from({ length: n - 1 }, (_, i) => i + 1).filter(i => i % workers.length === w))
    await Promise.all(workers.map(async (w, wi) => perWorker[wi].length === 0 ? undefined : await w.call<StartResult>('start', { indices: perWorker[wi], prefix: 'f', capabilities: true, bootstrap: [first.nodes[0].addr] }, 30_000)))
    // formed enough to query: every routing table holds at least half of the other nodes
    const want = Math.ceil((n - 1) / 2)
    const ready = await Promise.all(workers.map(async w => await w.call<{ ok: boolean, sizes: number[] }>('waitRoutingTables', { min: want, timeoutMs: cfg.waitCapMs }, cfg.waitCapMs + 15_000)))
    const formedMs = epochNow() - t0
    // providers: the mesh publishes by itself (card record + one provider record per capability);
    // raw nodes provide and put the same way
    const published = await Promise.all(workers.map(async w => await w.call<{ ok: boolean, failures: number, ms: number[] }>('publish', { timeoutMs: cfg.waitCapMs }, cfg.waitCapMs + 15_000)))
    const list = await Promise.all(workers.map(async w => await w.call<StartedNode[]>('list', {}, 10_000)))
    nodes[kind] = list.flat()
    formedAt[kind] = ready.every(x => x.ok) ? formedMs : Number.NaN
    formation[kind] = {
      routingTablesHalfFullMs: round(formedMs),
      routingTablesHalfFull: ready.every(x => x.ok),
      routingTableSizes: ready.flatMap(x => x.sizes),
      publishedAll: published.every(x => x.ok),
      publishFailures: published.reduce((n, x) => n + x.failures, 0),
      publishMs: summarize(published.flatMap(x => x.ms))
    }
    ctx.log(`find: ${kind} DHT ${ready.every(x => x.ok) ? 'formed' : 'NOT formed'} in ${formedMs.toFixed(0)} ms; routing table sizes ${ready.flatMap(x => x.sizes).join(',')}`)
    if (!ready.every(x => x.ok)) formation[`${kind}NotFormed`] = (await Promise.all(workers.map(async w => await w.call('diag', {}, 10_000)))).flat()
    if (!ready.every(x => x.ok)) notes.push(`${kind} DHT: not every routing table held ${want} peers within ${cfg.waitCapMs} ms (sizes ${ready.flatMap(x => x.sizes).join(',')}); queried anyway`)
  }

  const targets = (kind: Kind): Array<{ peerId: string, capability: string }> => nodes[kind].map(x => ({ peerId: x.peerId, capability: x.capability }))
  const samples: Record<FindMode, FindSample[]> = { find: [], find1: [], local: [], providers: [], get: [] }
  const meshGet: FindSample[] = []
  const cpu: Record<string, { us: number, n: number }> = {}
  const batch = async (kind: Kind, mode: FindMode, count: number, seed: number): Promise<FindSample[]> => {
    const workers = hosts[kind]
    const out: FindSample[] = []
    const cpu0 = await cpuOf(workers)
    for (let wi = 0; wi < workers.length; wi++) {
      const share = Math.floor(count / workers.length) + (wi < count % workers.length ? 1 : 0)
      if (share === 0) continue
      const maxMs = Math.ceil(cfg.batchCapMs / workers.length)
      out.push(...await workers[wi].call<FindSample[]>('findBatch', { mode, count: share, targets: targets(kind), seed: seed * 31 + wi, timeoutMs: QUERY_TIMEOUT_MS, maxMs }, maxMs + QUERY_TIMEOUT_MS + 15_000))
    }
    const key = `${kind}:${mode}`
    cpu[key] ??= { us: 0, n: 0 }
    cpu[key].us += await cpuOf(workers) - cpu0
    cpu[key].n += out.length
    return out
  }
  for (let r = 0; r < cfg.findRounds; r++) {
    const order: Kind[] = r % 2 === 0 ? ['raw', 'mesh'] : ['mesh', 'raw']
    ctx.log(`find round ${r + 1}/${cfg.findRounds}: ${order.join(', ')}: ${cfg.finds} queries per mode`)
    for (const kind of order) {
      if (ctx.signal.aborted) throw new Error('interrupted')
      if (kind === 'raw') {
        samples.providers.push(...await batch('raw', 'providers', cfg.finds, r * 7 + 1))
        samples.get.push(...await batch('raw', 'get', cfg.finds, r * 7 + 2))
      } else {
        samples.find.push(...await batch('mesh', 'find', cfg.finds, r * 7 + 3))
        samples.find1.push(...await batch('mesh', 'find1', cfg.finds, r * 7 + 4))
        meshGet.push(...await batch('mesh', 'get', cfg.finds, r * 7 + 5))
        samples.local.push(...await batch('mesh', 'local', cfg.localFinds, r * 7 + 6))
      }
    }
  }
  await Promise.all([...hosts.mesh, ...hosts.raw].map(async w => await w.call('stopAll', {}, 30_000)))

  // every DHT query ran on a searcher made a stranger to the target first (see `estrange`)
  const pick = (xs: FindSample[]): { summary: LatencySummary, subset: string } => {
    const hung = xs.filter(x => x.hungUp).length
    const evicted = xs.filter(x => x.evicted).length
    const still = xs.filter(x => x.connectedBefore).length
    return { summary: summarize(xs.map(x => x.ms)), subset: `${xs.length} queries: ${hung} hung up on the target first, ${evicted} dropped its cached card, ${still} still connected at the start` }
  }
  const meshFind = pick(samples.find)
  const meshFind1 = pick(samples.find1)
  const rawProv = pick(samples.providers)
  const rawFirst = summarize(samples.providers.map(x => x.firstMs ?? x.ms))
  const meshGetS = pick(meshGet)
  const rawGet = pick(samples.get)
  const local = summarize(samples.local.map(x => x.ms))
  const misses = (xs: FindSample[]): number => xs.filter(x => !x.found).length
  for (const [label, xs] of [['mesh find', samples.find], ['mesh find limit 1', samples.find1], ['raw findProviders', samples.providers], ['mesh DHT get', meshGet], ['raw DHT get', samples.get]] as const) {
    if (misses(xs) > 0) notes.push(`${label}: ${misses(xs)} of ${xs.length} queries did not find the provider/record`)
  }
  const cpuPer = (key: string): number => cpu[key] === undefined || cpu[key].n === 0 ? Number.NaN : cpu[key].us / cpu[key].n / 1000

  const figures: Record<string, Figure> = {
    dht_formed_ms: figure({ label: `${n}-node DHT via one bootstrap node: start → every routing table holds ≥ half the others`, unit: 'ms', better: 'lower', value: formedAt.mesh, baseline: formedAt.raw }),
    find_dht_p50_ms: figure({ label: `find exact capability, peer not met (DHT), ${n} nodes, p50 (raw: findProviders to its end)`, unit: 'ms', better: 'lower', value: meshFind.summary.p50, baseline: rawProv.summary.p50 }),
    find_dht_p95_ms: figure({ label: `find exact capability (DHT), ${n} nodes, p95`, unit: 'ms', better: 'lower', value: meshFind.summary.p95, baseline: rawProv.summary.p95, goalValue: FIND_P95_GOAL_MS }),
    find_dht_cpu_ms: figure({ label: 'find (DHT): CPU of all the side\'s processes (incl. background) per query', unit: 'ms', better: 'lower', value: cpuPer('mesh:find'), baseline: cpuPer('raw:providers') }),
    find_first_p50_ms: figure({ label: 'find limit 1, p50 (raw: first provider of findProviders)', unit: 'ms', better: 'lower', value: meshFind1.summary.p50, baseline: rawFirst.p50 }),
    find_first_p95_ms: figure({ label: 'find limit 1, p95', unit: 'ms', better: 'lower', value: meshFind1.summary.p95, baseline: rawFirst.p95, goalValue: FIND_P95_GOAL_MS }),
    find_local_p50_ms: figure({ label: 'find, local index only (dht: false), p50 (raw: first provider from the DHT)', unit: 'ms', better: 'lower', value: local.p50, baseline: rawFirst.p50 }),
    find_local_p95_ms: figure({ label: 'find, local index only, p95', unit: 'ms', better: 'lower', value: local.p95, baseline: rawFirst.p95, goalValue: FIND_P95_GOAL_MS }),
    dht_get_p50_ms: figure({ label: 'DHT get of a card record (/pmcard/, verified), p50 (raw: get of a 1 KiB record)', unit: 'ms', better: 'lower', value: meshGetS.summary.p50, baseline: rawGet.summary.p50 }),
    dht_get_p95_ms: figure({ label: 'DHT get of a card record, p95', unit: 'ms', better: 'lower', value: meshGetS.summary.p95, baseline: rawGet.summary.p95 })
  }
  const sum = (s: LatencySummary): Record<string, number> => Object.fromEntries(Object.entries(s).map(([k, v]) => [k, round(v)]))
  return {
    figures,
    notes,
    details: {
      nodes: n,
      placement: `${cfg.processes} processes per side, ${Math.ceil(n / cfg.processes)} nodes each; queries one at a time, spread over every process`,
      formation,
      subsets: { find: meshFind.subset, find1: meshFind1.subset, providers: rawProv.subset, meshGet: meshGetS.subset, rawGet: rawGet.subset },
      cardCachedBeforeFind: `${samples.find.filter(x => x.cardCachedBefore === true).length}/${samples.find.length}`,
      latencyMs: {
        meshFind: sum(meshFind.summary),
        meshFindLimit1: sum(meshFind1.summary),
        meshLocal: sum(local),
        meshDhtGet: sum(meshGetS.summary),
        rawFindProvidersDrained: sum(rawProv.summary),
        rawFindProvidersFirst: sum(rawFirst),
        rawGet: sum(rawGet.summary)
      },
      cpuMsPerQuery: Object.fromEntries(Object.keys(cpu).map(k => [k, round(cpuPer(k))]))
    }
  }
}

export const benchmark: Benchmark = {
  name: 'discovery',
  description: 'start → all cards verified (bootstrap, mDNS in netns), find latency on a private DHT vs raw kad-dht',
  run
}

// ---------------------------------------------------------------------------------------------
// worker side: a process hosting several nodes of one kind

interface Hosted {
  peerId: string
  addr: string
  capability: string
  mesh?: MeshNode
  raw?: RawStackNode
  home?: string
}

/** Deterministic pseudo-random numbers (mulberry32). */
function prng (seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6D2B79F5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

export const roles: Record<string, RoleFactory> = {
  host: async (args: { kind: Kind, mdns?: boolean, listen?: string, label?: string }) => {
    await import('@persona-mesh/node/polyfill') // Node 20: before libp2p
    const { peerIdFromString } = await import('@libp2p/peer-id')
    const rawStack = await import('../lib/raw-stack.js')
    const meshModule = args.kind === 'mesh' ? await loadMeshModule() : undefined
    const { cardDhtKey } = await import('@persona-mesh/protocol')
    const listen = [args.listen ?? '/ip4/127.0.0.1/tcp/0']
    const hosted: Hosted[] = []
    const pickAddr = (addrs: string[]): string => args.mdns === true ? (addrs.find(a => a.includes('/p2p/')) ?? addrs[0]) : loopbackAddr(addrs)

    const startOne = async (name: string, capability: string | undefined, bootstrap: string[] | undefined): Promise<Hosted> => {
      if (args.kind === 'mesh') {
        const home = await mkdtemp(join(process.env[TMP_ROOT_ENV] || tmpdir(), `pmesh-bench-${name}-`))
        const node = await meshModule!.createMeshNode({
          name,
          home,
          listen,
          mdns: mdnsInNetns(args.mdns),
          ...(bootstrap !== undefined ? { bootstrap } : {}),
          card: { description: `bench node ${name}`, capabilities: capability !== undefined ? [{ name: capability }] : [] }
        })
        return { peerId: node.peerId, addr: pickAddr(node.multiaddrs), capability: capability ?? '', mesh: node, home }
      }
      const node = await rawStack.createRawStackNode({ listen, ...(bootstrap !== undefined ? { bootstrap } : {}), mdns: args.mdns === true })
      return { peerId: node.peerId.toString(), addr: pickAddr(node.getMultiaddrs().map(String)), capability: capability ?? '', raw: node }
    }
    const libp2pOf = (h: Hosted) => (h.mesh?.libp2p ?? h.raw)!

    const count = async (h: Hosted, c: Criterion): Promise<number> => {
      if (c === 'cards') return h.mesh === undefined ? 0 : (await h.mesh.cards()).length
      const lib = libp2pOf(h)
      const peers = await lib.peerStore.all()
      if (c === 'known') return peers.filter(p => !p.id.equals(lib.peerId) && p.addresses.length > 0).length
      return peers.filter(p => !p.id.equals(lib.peerId) && p.protocols.length > 0 && lib.getConnections(p.id).length > 0).length
    }
    const rtSize = (h: Hosted): number => {
      const dht = libp2pOf(h).services.dht as unknown as { routingTable?: { size?: number } }
      return dht.routingTable?.size ?? -1
    }

    const stopAll = async (): Promise<void> => {
      const all = hosted.splice(0)
      await Promise.all(all.map(async h => {
        try {
          if (h.mesh !== undefined) await h.mesh.stop()
          else await h.raw?.stop()
        } finally {
          if (h.home !== undefined) await rm(h.home, { recursive: true, force: true })
        }
      }))
    }

    /**
     * Make the searcher a stranger to the target before a DHT query: close its connections to it
     * and (mesh) drop the target's card from the in-memory index, so `find` has to go through the
     * DHT providers and the DHT card record, as for a peer never met. On a small DHT everyone is
     * connected to everyone after forming, so "a node that has not met the provider" is made, not found.
     */
    const estrange = async (h: Hosted, target: string): Promise<{ hungUp: boolean, evicted: boolean }> => {
      const lib = libp2pOf(h)
      const id = peerIdFromString(target)
      const hungUp = lib.getConnections(id).length > 0
      if (hungUp) await lib.hangUp(id, { signal: AbortSignal.timeout(2000) }).catch(() => {})
      const index = (h.mesh as unknown as { cardService?: { cards?: Map<string, unknown> } } | undefined)?.cardService?.cards
      const evicted = index instanceof Map ? index.delete(target) : false
      return { hungUp, evicted }
    }

    const oneQuery = async (h: Hosted, mode: FindMode, target: { peerId: string, capability: string }, timeoutMs: number): Promise<FindSample> => {
      const lib = libp2pOf(h)
      const { hungUp, evicted } = mode === 'local' ? { hungUp: false, evicted: false } : await estrange(h, target.peerId)
      const connectedBefore = lib.getConnections(peerIdFromString(target.peerId)).length > 0
      const signal = AbortSignal.timeout(timeoutMs)
      setMaxListeners(Infinity, signal)
      if (mode === 'find' || mode === 'find1' || mode === 'local') {
        const cardCachedBefore = (await h.mesh!.cards()).some(c => c.peerId === target.peerId)
        const t0 = performance.now()
        const results = await h.mesh!.find(target.capability, { signal, ...(mode === 'find1' ? { limit: 1 } : {}), ...(mode === 'local' ? { dht: false } : {}) }).catch(() => [])
        const ms = performance.now() - t0
        return { ms, found: results.some(x => x.peerId === target.peerId), connectedBefore, cardCachedBefore, hungUp, evicted }
      }
      if (mode === 'get') {
        const key = h.mesh !== undefined ? cardDhtKey(target.peerId) : rawStack.benchKey(target.peerId)
        const t0 = performance.now()
        let found = false
        try {
          for await (const evt of lib.services.dht.get(key, { signal })) {
            if (evt.name === 'VALUE') { found = true; break }
          }
        } catch {}
        return { ms: performance.now() - t0, found, connectedBefore, hungUp, evicted }
      }
      // raw findProviders, drained like mesh.find drains it (one provider < its limit of 10)
      const cid = await rawStack.nameCid(target.capability)
      const t0 = performance.now()
      let firstMs: number | undefined
      try {
        for await (const evt of lib.services.dht.findProviders(cid, { signal })) {
          if (evt.name === 'PROVIDER' && firstMs === undefined && evt.providers.some(p => p.id.toString() === target.peerId)) firstMs = performance.now() - t0
        }
      } catch {}
      const ms = performance.now() - t0
      return { ms, found: firstMs !== undefined, connectedBefore, hungUp, evicted, ...(firstMs !== undefined ? { firstMs } : {}) }
    }

    return {
      ready: { kind: args.kind, label: args.label },
      methods: {
        /** Start nodes at once, one per index; names `<prefix>-<label>-<index>`. */
        start: async (p: { indices: number[], prefix: string, bootstrap?: string[], capabilities?: boolean }): Promise<StartResult> => {
          const begin = epochNow()
          const started = await Promise.all(p.indices.slice(0, 50).map(async (idx) => {
            return await startOne(`${p.prefix}-${args.label ?? 'n'}-${idx}`, p.capabilities === true ? `bench-cap-${p.prefix}-${idx}` : undefined, p.bootstrap)
          }))
          hosted.push(...started)
          return { begin, end: epochNow(), nodes: started.map(h => ({ peerId: h.peerId, addr: h.addr, capability: h.capability })) }
        },
        list: () => hosted.map(h => ({ peerId: h.peerId, addr: h.addr, capability: h.capability })),
        /** Poll (10 ms) until every hosted node counts `expected` peers by the first criterion; times per criterion (epoch ms). */
        waitAll: async (p: { expected: number, criteria: Criterion[], timeoutMs: number }): Promise<Reached> => {
          const deadline = performance.now() + Math.min(p.timeoutMs, 120_000)
          const reached: Reached = hosted.map(() => ({}))
          for (let attempt = 0; attempt < 20_000; attempt++) {
            for (let i = 0; i < hosted.length; i++) {
              for (const c of p.criteria) {
                if (reached[i][c] === undefined && await count(hosted[i], c) >= p.expected) reached[i][c] = epochNow()
              }
            }
            if (reached.every(x => x[p.criteria[0]] !== undefined) || performance.now() > deadline) break
            await new Promise(resolve => setTimeout(resolve, 10))
          }
          return reached
        },
        /** Per node: routing table size, open connections, peers known to speak the node's DHT protocol. */
        diag: async () => await Promise.all(hosted.map(async h => {
          const lib = libp2pOf(h)
          const kad = h.mesh !== undefined ? '/persona-mesh/kad/1.0.0' : rawStack.RAW_KAD_PROTOCOL
          const peers = await lib.peerStore.all()
          return { rt: rtSize(h), connections: lib.getConnections().length, kadPeers: peers.filter(x => x.protocols.includes(kad)).length, known: peers.length }
        })),
        waitRoutingTables: async (p: { min: number, timeoutMs: number }) => {
          const deadline = performance.now() + Math.min(p.timeoutMs, 120_000)
          for (let attempt = 0; attempt < 10_000; attempt++) {
            if (hosted.every(h => rtSize(h) >= p.min) || performance.now() > deadline) break
            await new Promise(resolve => setTimeout(resolve, 50))
          }
          return { ok: hosted.every(h => rtSize(h) >= p.min), sizes: hosted.map(rtSize) }
        },
        /** Raw: provide the node's name and put a 1 KiB record. Mesh: wait until its card is in the DHT. */
        publish: async (p: { timeoutMs: number }) => {
          let failures = 0
          const ms = await Promise.all(hosted.map(async h => {
            const t0 = performance.now()
            const signal = AbortSignal.timeout(p.timeoutMs)
            setMaxListeners(Infinity, signal)
            if (h.raw !== undefined) {
              try {
                await Promise.all([
                  rawStack.drain(h.raw.services.dht.provide(await rawStack.nameCid(h.capability), { signal })),
                  rawStack.drain(h.raw.services.dht.put(rawStack.benchKey(h.peerId), new Uint8Array(1024).fill(7), { signal }))
                ])
              } catch {
                failures++
              }
              return performance.now() - t0
            }
            // the mesh publishes by itself (debounced after start and connects); peek at its
            // progress, bounded: the card service marks the seq it put in the DHT
            const cards = (h.mesh as unknown as { cardService?: { dhtPublishedSeq?: number, own?: { card: { seq: number } } } }).cardService
            for (let attempt = 0; attempt < 2000 && !signal.aborted; attempt++) {
              if (cards === undefined || cards.own === undefined || cards.dhtPublishedSeq === cards.own.card.seq) break
              await new Promise(resolve => setTimeout(resolve, 20))
            }
            if (signal.aborted) failures++
            return performance.now() - t0
          }))
          return { ok: failures === 0, failures, ms }
        },
        findBatch: async (p: { mode: FindMode, count: number, targets: Array<{ peerId: string, capability: string }>, seed: number, timeoutMs: number, maxMs: number }): Promise<FindSample[]> => {
          const rand = prng(p.seed)
          const out: FindSample[] = []
          const n = Math.min(p.count, 10_000)
          const stopAt = performance.now() + Math.min(p.maxMs, 120_000)
          for (let i = 0; i < n && performance.now() < stopAt; i++) {
            const h = hosted[i % hosted.length]
            const others = p.targets.filter(t => t.peerId !== h.peerId)
            const target = others[Math.floor(rand() * others.length)]
            out.push(await oneQuery(h, p.mode, target, p.timeoutMs))
          }
          return out
        },
        stopAll
      },
      close: stopAll
    }
  }
}
