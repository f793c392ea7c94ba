import { createHash } from 'node:crypto'
import { setMaxListeners } from 'node:events'
import { join } from 'node:path'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { bootstrap } from '@libp2p/bootstrap'
import { gossipsub } from '@libp2p/gossipsub'
import { createTopicScoreParams } from '@libp2p/gossipsub/score'
import { identify } from '@libp2p/identify'
import { kadDHT, passthroughMapper } from '@libp2p/kad-dht'
import { logger } from '@libp2p/logger'
import { mdns } from '@libp2p/mdns'
import { peerIdFromString } from '@libp2p/peer-id'
import { ping } from '@libp2p/ping'
import { tcp } from '@libp2p/tcp'
import { isLoopback } from '@libp2p/utils'
import { multiaddr } from '@multiformats/multiaddr'
import { MemoryDatastore } from 'datastore-core'
import { createLibp2p } from 'libp2p'
import { TypedEventEmitter } from 'main-event'
import { CARD_PROTOCOL, CARDS_TOPIC, CapabilityNameSchema, TOOL_CALL_METHOD, traceId, DELIVER_PROTOCOLS, KAD_PROTOCOL, RPC_PROTOCOL } from '@persona-mesh/protocol'
import { CardService, DHT_DATASTORE_PREFIX, searchCards } from './cards/index.js'
import { AmbiguousNameError, InvalidArgumentError, NotFoundError, NotStartedError, PeerUnreachableError } from './errors.js'
import { PeerTable } from './peers/peer-table.js'
import { BroadcastService } from './broadcast/broadcast-service.js'
import { DeliveryService } from './delivery/index.js'
import { createInboxView } from './inbox/inbox-view.js'
import { Policy } from './policy/policy.js'
import { TaskService } from './tasks/index.js'
import { ToolService } from './tools/tool-service.js'
import { saveConfig } from './config.js'
import { openStore } from '@persona-mesh/store'
import { loadConfig } from './config.js'
import { defaultHome, defaultName, loadOrCreateIdentity, personaDir, validateName } from './identity.js'
import { RpcService } from './rpc/index.js'
import type { CardProfile } from './cards/index.js'
import type { FindOptions, FindResult, Mesh, MeshEvents, MeshStatus } from './mesh.js'
import type { PeerInfo } from './peers/peer-table.js'
import type { HandleOptions, RequestOptions, RpcHandler } from './rpc/index.js'
import type { GossipSub } from '@libp2p/gossipsub'
import type { Libp2p, PeerDiscovery, PeerId, PrivateKey } from '@libp2p/interface'
import type { Datastore } from 'interface-datastore'
import type { KadDHT } from '@libp2p/kad-dht'
import type { Multiaddr } from '@multiformats/multiaddr'
import type { Card, JsonValue } from '@persona-mesh/protocol'
import type { BroadcastResult } from './broadcast/broadcast-service.js'
import type { SendOptions, SendResult } from './delivery/index.js'
import type { MeshInbox } from './inbox/inbox-view.js'
import type { MeshOutbox } from './mesh.js'
import type { AuditEvent, InboxEntry, MeshStore } from '@persona-mesh/store'
import type { PolicyConfig, ResolvedPolicy } from './policy/policy.js'
import type { DelegateOptions, DelegateTarget, TaskHandler, TaskHandlerOptions, TaskInfo } from './tasks/index.js'
import type { ToolDefinition } from './tools/tool-service.js'
import type { MeshAudit, MeshPolicy, MeshTasks, MeshTools, TraceReport } from './mesh.js'
import type { TaskTree } from '@persona-mesh/protocol'
import type { RateLimit } from './policy/token-bucket.js'

const log = logger('persona-mesh:node')

/** Listen on every IPv4 interface, on a port the OS picks. */
export const DEFAULT_LISTEN = ['/ip4/0.0.0.0/tcp/0']
/** How long a dial to a discovered or bootstrap peer may take. */
export const DEFAULT_DIAL_TIMEOUT_MS = 10_000
/** Methods under this prefix are the mesh's own. */
export const RESERVED_PREFIX = 'mesh.'

export interface MeshNodeInit {
  /** The persona's name; names its data directory. @default $PMESH_NAME or 'default' */
  name?: string
  /** Where personas keep their data. @default $PMESH_HOME or ~/.persona-mesh */
  home?: string
  /** Multiaddrs to listen on. @default ['/ip4/0.0.0.0/tcp/0'] */
  listen?: string[]
  /** Multiaddrs (with `/p2p/<PeerId>`) of peers to join through. @default [] */
  bootstrap?: string[]
  /**
   * Find peers on the local network with mDNS and dial them. Multicast leaves the machine:
   * turn it off where that is not wanted. @default true
   */
  mdns?: boolean
  /** Use this key instead of the persona's `identity.key` (tests, embedding). */
  privateKey?: PrivateKey
  /** What this persona's signed card says about it (description, capabilities, …). */
  card?: CardProfile
  /** Lifetime of each issued card; re-issued at half-life. @default 3600000 (1 h) */
  cardLifetime?: number
  /** Mark a peer offline after it stayed unreachable this long. @default 15000 */
  offlineAfter?: number
  /** Who may do what: open or allowlist, grants, rate limits. @default open */
  policy?: PolicyConfig
  /** Delegation chains deeper than this are refused. @default 8 */
  maxHops?: number
  /** Per-peer token bucket on incoming deliveries. @default { rate: 10000, burst: 20000 } */
  deliveryRateLimit?: RateLimit
  /** Outbox caps: queued messages per recipient and in total. @default 10000 / 100000 */
  maxQueuePerPeer?: number
  maxQueueTotal?: number
  /** Start listening before returning. @default true */
  start?: boolean
  rpc?: {
    /** @default 262144 */
    maxFrameSize?: number
    /** Default request timeout in ms. @default 30000 */
    defaultTimeout?: number
    /** @default 4 */
    streamsPerPeer?: number
  }
}

/**
 * A persona's node, in this process: the libp2p host and the mesh services on it.
 *
 * @example
 * ```ts
 * const node = await createMeshNode({ name: 'aria', listen: ['/ip4/127.0.0.1/tcp/0'], mdns: false })
 * node.handle('echo', body => body)
 * const answer = await node.request(otherPeerId, 'echo', { hello: 'world' })
 * await node.stop()
 * ```
 */
export type MeshLibp2p = Libp2p<{ dht: KadDHT, pubsub: GossipSub }>

export interface MeshNode extends Mesh {
  readonly dataDir: string
  readonly libp2p: MeshLibp2p
  readonly multiaddrs: string[]
  readonly isStarted: boolean
  start(): Promise<void>
  stop(): Promise<void>
  /** Answer requests for `method` (see `RpcHandler`). */
  handle(method: string, handler: RpcHandler, options?: HandleOptions): void
  unhandle(method: string): void
  readonly tasks: LocalTasks
  readonly tools: LocalTools
}

/** Tasks in-process: the `Mesh` view plus registering handlers. */
export interface LocalTasks extends MeshTasks {
  /** Run tasks of `capability` with code (add the capability to the card to be found by it). */
  handle(capability: string, handler: TaskHandler, options?: TaskHandlerOptions): void
  unhandle(capability: string): void
  /** The result of a task we delegated; throws `TaskFailedError` unless it completed. */
  result(id: string, options?: { timeout?: number, signal?: AbortSignal }): Promise<JsonValue>
}

/** Tools in-process: the `Mesh` view plus registering tools (advertised in the card). */
export interface LocalTools extends MeshTools {
  register(name: string, definition: ToolDefinition): Promise<void>
  unregister(name: string): Promise<void>
}

class DefaultMeshNode extends TypedEventEmitter<MeshEvents> implements MeshNode {
  readonly peerId: string
  private readonly rpc: RpcService
  private readonly cardService: CardService
  private readonly peerTable: PeerTable
  private readonly privateKey: PrivateKey
  private readonly init: MeshNodeInit
  private currentStore?: MeshStore
  private delivery?: DeliveryService
  private broadcasts?: BroadcastService
  private readonly received = new Set<(entry: InboxEntry) => void>()
  readonly inbox: MeshInbox
  readonly outbox: MeshOutbox
  readonly tasks: LocalTasks
  readonly tools: LocalTools
  readonly audit: MeshAudit
  readonly policy: MeshPolicy
  private readonly policyRules: Policy
  private readonly taskService: TaskService
  private readonly toolService: ToolService
  private startedAt = 0
  private running = false
  private transition: Promise<void> = Promise.resolve()

  constructor (readonly name: string, readonly dataDir: string, readonly libp2p: MeshLibp2p, privateKey: PrivateKey, datastore: Datastore, init: MeshNodeInit) {
    super()
    this.peerId = libp2p.peerId.toString()
    this.privateKey = privateKey
    this.init = init
    this.inbox = createInboxView(() => this.store, (listener) => {
      this.received.add(listener)
      return () => { this.received.delete(listener) }
    })
    this.outbox = {
      get: async (id) => this.store.outbox.get(id),
      list: async (query = {}) => {
        await this.delivery?.expireNow()
        return this.store.outbox.list(query)
      }
    }
    this.cardService = new CardService({ libp2p, privateKey, datastore }, {
      name,
      protocols: MESH_PROTOCOLS,
      cache: {
        load: async () => (await this.store.cards.list()).map(record => record.bytes),
        save: async (verified) => {
          await this.store.cards.put(verified.card.peerId, { seq: verified.card.seq, bytes: verified.bytes, card: verified.card as unknown as Record<string, JsonValue>, verifiedAt: verified.receivedAt })
        }
      },
      ...(init.card !== undefined ? { profile: init.card } : {}),
      ...(init.cardLifetime !== undefined ? { lifetime: init.cardLifetime } : {})
    })
    this.peerTable = new PeerTable(libp2p, this.cardService, init.offlineAfter !== undefined ? { offlineAfter: init.offlineAfter } : {})
    this.cardService.addEventListener('card', (evt) => {
      // a verified card says where the peer listens: let libp2p dial it by PeerId
      const { peerId, addrs } = evt.detail.card
      void libp2p.peerStore.merge(peerIdFromString(peerId), { multiaddrs: addrs.flatMap(a => { try { return [multiaddr(a)] } catch { return [] } }) }).catch(() => {})
      // a newly verified card is a discovery: whatever waits in the outbox for that peer can go now
      this.delivery?.kick(evt.detail.card.peerId, true)
      this.safeDispatch('peer:card', evt.detail.card)
    })
    this.peerTable.addEventListener('peer:online', (evt) => { this.safeDispatch('peer:online', evt.detail) })
    this.peerTable.addEventListener('peer:offline', (evt) => { this.safeDispatch('peer:offline', evt.detail) })
    this.policyRules = new Policy(init.policy)
    this.rpc = new RpcService(libp2p, { ...init.rpc, gate: (from, method) => this.policyRules.request(from, method) })
    // built-in connectivity check; `mesh.*` methods are reserved for the mesh itself
    this.rpc.handle('mesh.echo', body => body, { timeout: 5000, maxConcurrent: 32 })
    this.toolService = new ToolService({
      authorize: (peer, tool) => this.policyRules.tool(peer, tool),
      advertise: async (tools) => { await this.cardService.update({ tools }) },
      audit: (event) => { this.auditEvent({ kind: 'tool.call', peer: event.peer, id: event.tool, outcome: event.outcome, ...(event.detail !== undefined ? { detail: event.detail } : {}) }) },
      request: async (peer, method, body, options) => this.request(peer, method, body, options)
    })
    this.rpc.handle(TOOL_CALL_METHOD, this.toolService.serve, { timeout: 60_000, maxConcurrent: 64 })
    this.taskService = new TaskService({
      self: this.peerId,
      store: () => this.store,
      send: async (to, body, options) => this.delivery!.send(to, body, options),
      candidates: async (capability) => this.candidates(capability),
      resolve: async (peer) => this.resolve(peer),
      capabilitiesOf: (peer) => (this.cardService.get(peer)?.card.capabilities ?? []).map(c => c.name),
      policy: () => this.policyRules,
      audit: (event) => { this.auditEvent(event) }
    }, init.maxHops !== undefined ? { maxHops: init.maxHops } : {})
    this.taskService.addEventListener('task:update', (evt) => { this.safeDispatch('task:update', evt.detail) })
    const tasks = this.taskService
    this.tasks = {
      handle: (capability, handler, options) => { tasks.handle(capability, handler, options) },
      unhandle: (capability) => { tasks.unhandle(capability) },
      list: async (query) => tasks.list(query),
      get: async (id) => tasks.get(id),
      wait: async (id, options) => tasks.wait(id, options),
      result: async (id, options) => tasks.result(id, options),
      cancel: async (id) => tasks.cancel(id),
      update: async (id, update) => tasks.update(id, update)
    }
    const tools = this.toolService
    this.tools = {
      register: async (name, definition) => { await tools.register(name, definition) },
      unregister: async (name) => { await tools.unregister(name) },
      list: async (peer) => peer === undefined || peer === this.peerId || peer === this.name ? tools.specs() : (await this.card(peer)).tools,
      call: async (peer, name, args, options) => tools.call(peer, name, args, options)
    }
    this.audit = {
      query: async (query = {}) => this.store.audit.query(query)
    }
    this.policy = {
      get: async () => this.policyRules.snapshot,
      allow: async (peer) => this.savePolicy(this.policyRules.allow(await this.resolve(peer))),
      deny: async (peer) => this.savePolicy(this.policyRules.deny(await this.resolve(peer))),
      mode: async (mode) => this.savePolicy(this.policyRules.setMode(mode))
    }
    libp2p.addEventListener('peer:connect', (evt) => {
      this.safeDispatch('peer:connect', evt.detail.toString())
    })
    libp2p.addEventListener('peer:disconnect', (evt) => {
      this.safeDispatch('peer:disconnect', evt.detail.toString())
    })
    libp2p.addEventListener('peer:discovery', (evt) => { this.dialDiscovered(evt.detail.id) })
  }

  /** Discovered is not connected: dial, or the peer stays a stranger. */
  dialDiscovered (id: PeerId): void {
    const { libp2p } = this
    // libp2p (and mDNS with it) is up before the mesh services finish starting: dial as soon as it can
    if (libp2p.status !== 'started' || id.equals(libp2p.peerId) || libp2p.getConnections(id).length > 0) return
    libp2p.dial(id, { signal: AbortSignal.timeout(DEFAULT_DIAL_TIMEOUT_MS) }).catch((err: Error) => {
      log('could not dial discovered peer %p: %s', id, err.message)
    })
  }

  private safeDispatch<K extends keyof MeshEvents> (type: K, detail: MeshEvents[K]['detail']): void {
    try {
      this.dispatchEvent(new CustomEvent(type, { detail }))
    } catch (err) {
      log.error('listener for %s threw: %e', type, err)
    }
  }

  private get store (): MeshStore {
    if (this.currentStore === undefined) throw new NotStartedError(`node ${this.name} is not running`)
    return this.currentStore
  }

  get isStarted (): boolean {
    return this.running
  }

  get multiaddrs (): string[] {
    return this.libp2p.getMultiaddrs().map(ma => ma.toString())
  }

  async start (): Promise<void> {
    this.transition = this.transition.then(async () => {
      if (this.running) return
      // the store first: it is the one-owner lock on the data directory
      const store = await openStore({
        path: join(this.dataDir, 'db'),
        owner: { name: this.name },
        ...(this.init.maxQueuePerPeer !== undefined ? { maxQueuePerPeer: this.init.maxQueuePerPeer } : {}),
        ...(this.init.maxQueueTotal !== undefined ? { maxQueueTotal: this.init.maxQueueTotal } : {})
      })
      this.currentStore = store
      try {
        await this.libp2p.start()
        await this.rpc.start()
        await this.cardService.start()
        this.peerTable.start()
        this.delivery = this.createDelivery(store)
        await this.delivery.start()
        this.broadcasts = new BroadcastService({ libp2p: this.libp2p, privateKey: this.privateKey, store }, {
          ...(this.init.rpc?.maxFrameSize !== undefined ? { maxFrameSize: this.init.rpc.maxFrameSize } : {}),
          onReceived: (entry) => { this.onReceived(entry) }
        })
        await this.broadcasts.start()
        await this.taskService.start()
      } catch (err) {
        await this.shutdown().catch(() => {})
        throw err
      }
      this.startedAt = Date.now()
      this.running = true
      log('started %s as %s on %s', this.name, this.peerId, this.multiaddrs.join(', '))
    })
    await this.transition
  }

  async stop (): Promise<void> {
    this.transition = this.transition.catch(() => {}).then(async () => {
      if (!this.running) return
      this.running = false
      await this.shutdown()
      this.startedAt = 0
      log('stopped %s', this.name)
    })
    await this.transition
  }

  private async shutdown (): Promise<void> {
    await this.taskService.stop()
    await this.broadcasts?.stop()
    await this.delivery?.stop()
    this.peerTable.stop()
    await this.cardService.stop()
    await this.rpc.stop()
    await this.libp2p.stop()
    await this.currentStore?.close()
    this.currentStore = undefined
    this.delivery = undefined
    this.broadcasts = undefined
  }

  private createDelivery (store: MeshStore): DeliveryService {
    const delivery = new DeliveryService({ libp2p: this.libp2p, privateKey: this.privateKey, store }, {
      ...(this.init.rpc?.maxFrameSize !== undefined ? { maxFrameSize: this.init.rpc.maxFrameSize } : {}),
      ...((this.init.deliveryRateLimit ?? this.policyRules.deliveryLimit) !== undefined ? { rateLimit: this.init.deliveryRateLimit ?? this.policyRules.deliveryLimit } : {}),
      decide: (envelope) => {
        // the signer, not the connection: envelopes may be forwarded
        const verdict = this.policyRules.incoming(envelope.from)
        return verdict === 'refuse' ? { refuse: 'unauthorized', message: 'this persona does not accept messages from you' } : verdict
      },
      audit: (event) => { this.auditEvent(event) }
    })
    for (const type of ['message:delivered', 'message:failed', 'message:expired'] as const) {
      delivery.addEventListener(type, (evt) => { this.safeDispatch(type, evt.detail) })
    }
    delivery.addEventListener('message:received', (evt) => { this.onReceived(evt.detail) })
    delivery.addEventListener('message:failed', (evt) => { void this.taskService.onDeliveryFailed(evt.detail) })
    return delivery
  }

  /** Log an event, not waiting for it (several per delivered message). A bad event is dropped: auditing never fails the caller. */
  private auditEvent (event: Omit<AuditEvent, 'at'>): void {
    const store = this.currentStore
    if (store === undefined) return
    const e: AuditEvent = { at: Date.now(), kind: event.kind, outcome: event.outcome }
    if (event.peer !== undefined) e.peer = event.peer
    if (event.id !== undefined) e.id = event.id
    if (event.trace !== undefined) e.trace = event.trace
    if (event.detail !== undefined) e.detail = event.detail
    try {
      store.audit.record(e)
    } catch (err) {
      log('audit event dropped: %s', (err as Error).message)
    }
  }

  private async savePolicy (policy: ResolvedPolicy): Promise<ResolvedPolicy> {
    const config = await loadConfig(this.dataDir)
    config.policy = policy
    await saveConfig(this.dataDir, config)
    return policy
  }

  /** Peers offering `capability`, best first: online, then fewest of our tasks running there, then lowest RTT. */
  private async candidates (capability: string): Promise<string[]> {
    const found = await this.find(capability, { limit: 20 })
    const offering = found.filter(r => r.card.capabilities.some(c => c.name === capability))
    const rank = (r: FindResult): [number, number, number] => [r.online ? 0 : 1, this.taskService.activeWith(r.peerId), this.peerTable.get(r.peerId)?.rtt ?? 1e9]
    return offering
      .sort((a, b) => {
        const [x, y] = [rank(a), rank(b)]
        return x[0] - y[0] || x[1] - y[1] || x[2] - y[2]
      })
      .map(r => r.peerId)
  }

  private onReceived (entry: InboxEntry): void {
    // a task envelope is recorded before anyone hears of it, so a listener that reacts at once
    // (an agent calling tasks.get/update) finds the task
    if (entry.kind.startsWith('task.')) {
      void this.taskService.onEnvelope(entry).finally(() => { this.notifyReceived(entry) })
      return
    }
    this.notifyReceived(entry)
  }

  private notifyReceived (entry: InboxEntry): void {
    for (const listener of this.received) {
      try {
        listener(entry)
      } catch (err) {
        log.error('inbox listener threw: %e', err)
      }
    }
    this.safeDispatch('message:received', entry)
  }


  async send (to: string, body: JsonValue, options: SendOptions = {}): Promise<SendResult> {
    this.assertRunning()
    const peerId = to === this.name ? this.peerId : await this.resolve(to)
    return this.delivery!.send(peerId, body, options)
  }

  async subscribe (topic: string): Promise<string[]> {
    this.assertRunning()
    return this.broadcasts!.subscribe(topic)
  }

  async unsubscribe (topic: string): Promise<string[]> {
    this.assertRunning()
    return this.broadcasts!.unsubscribe(topic)
  }

  async topics (): Promise<string[]> {
    return this.broadcasts?.topics() ?? []
  }

  async broadcast (topic: string, body: JsonValue, options: { ttl?: number, thread?: string } = {}): Promise<BroadcastResult> {
    this.assertRunning()
    return this.broadcasts!.broadcast(topic, body, options)
  }

  async status (): Promise<MeshStatus> {
    const peers = this.running ? this.libp2p.getPeers().map(p => p.toString()) : []
    return {
      peerId: this.peerId,
      name: this.name,
      multiaddrs: this.running ? this.multiaddrs : [],
      running: this.running,
      startedAt: this.startedAt,
      connections: this.running ? this.libp2p.getConnections().length : 0,
      peers,
      outbox: { queued: this.currentStore?.outbox.count().total ?? 0 },
      inbox: { unread: this.currentStore?.inbox.unread() ?? 0, quarantined: this.currentStore?.inbox.quarantined() ?? 0, ...cursorOf(this.currentStore) },
      topics: this.broadcasts?.topics() ?? []
    }
  }

  async dial (address: string, options: { signal?: AbortSignal } = {}): Promise<void> {
    this.assertRunning()
    const ma = parseMultiaddr(address)
    try {
      await this.libp2p.dial(ma, { signal: options.signal ?? AbortSignal.timeout(DEFAULT_DIAL_TIMEOUT_MS) })
    } catch (err) {
      throw new PeerUnreachableError(`cannot dial ${address}: ${(err as Error).message}`)
    }
  }

  handle (method: string, handler: RpcHandler, options?: HandleOptions): void {
    if (method.startsWith(RESERVED_PREFIX)) {
      throw new InvalidArgumentError(`method names starting with ${RESERVED_PREFIX} are reserved for the mesh`)
    }
    this.rpc.handle(method, handler, options)
  }

  unhandle (method: string): void {
    this.rpc.unhandle(method)
  }

  async request (peer: string | PeerId, method: string, body: JsonValue, options?: RequestOptions): Promise<JsonValue> {
    this.assertRunning()
    return this.rpc.request(await this.target(peer), method, body, options)
  }

  /** A PeerId, a multiaddr, or a persona name known from a verified card. */
  private async target (peer: string | PeerId): Promise<PeerId | Multiaddr> {
    if (typeof peer === 'string' && !peer.startsWith('/') && !looksLikePeerId(peer)) {
      return peerIdFromString(await this.resolve(peer))
    }
    return toTarget(peer)
  }

  async peers (options: { onlineOnly?: boolean } = {}): Promise<PeerInfo[]> {
    return this.peerTable.list(options)
  }

  async card (peer?: string, options: { signal?: AbortSignal } = {}): Promise<Card> {
    if (peer === undefined || peer === this.peerId || peer === this.name) return this.cardService.own.card
    this.assertRunning()
    const peerId = await this.resolve(peer)
    const cached = this.cardService.get(peerId)
    if (cached !== undefined) return cached.card
    const id = peerIdFromString(peerId)
    if (this.libp2p.getConnections(id).length > 0) {
      try {
        return (await this.cardService.fetch(id, options)).card
      } catch {}
    }
    const found = await this.cardService.lookup(peerId, options).catch(() => undefined)
    if (found === undefined) throw new NotFoundError(`no verified card for ${peerId}`)
    return found.card
  }

  async cards (): Promise<Card[]> {
    return this.cardService.list().map(c => c.card)
  }

  async find (query: string, options: FindOptions = {}): Promise<FindResult[]> {
    this.assertRunning()
    const limit = options.limit ?? 10
    const fromDht = new Set<string>()
    const exact = query.trim()
    if ((options.dht ?? true) && CapabilityNameSchema.safeParse(exact).success) {
      const signal = options.signal ?? AbortSignal.timeout(5000)
      setMaxListeners(Infinity, signal)
      const fetches: Array<Promise<unknown>> = []
      const fetchCard = async (id: string): Promise<void> => {
        if (this.cardService.get(id) !== undefined) return
        // the DHT record this node holds itself costs no round trip; else straight from the provider
        // (the DHT query just told us its addresses); else the DHT record from the network
        if (await this.cardService.heldRecord(id, { signal }).catch(() => undefined) !== undefined) return
        const direct = await this.cardService.fetch(peerIdFromString(id), { signal: AbortSignal.any([signal, AbortSignal.timeout(2000)]) }).catch(() => undefined)
        if (direct === undefined) await this.cardService.lookup(id, { signal }).catch(() => undefined)
      }
      // each card is fetched as soon as its provider is known, while the walk looks for more
      await this.cardService.findProviders(exact, {
        signal,
        limit,
        onProvider: (id) => {
          fromDht.add(id)
          fetches.push(fetchCard(id))
        }
      }).catch(() => [])
      await Promise.all(fetches)
    }
    const hits = searchCards(this.cardService.list(), query)
    const seen = new Set(hits.map(h => h.peerId))
    for (const id of fromDht) {
      if (!seen.has(id) && this.cardService.get(id) !== undefined) hits.push({ peerId: id, score: 100, matched: ['dht'] })
    }
    hits.sort((a, b) => b.score - a.score)
    const results: FindResult[] = []
    for (const hit of hits.slice(0, limit)) {
      const card = this.cardService.get(hit.peerId)
      if (card === undefined) continue
      results.push({
        peerId: hit.peerId,
        name: card.card.name,
        score: hit.score,
        matched: fromDht.has(hit.peerId) && !hit.matched.includes('dht') ? [...hit.matched, 'dht'] : hit.matched,
        online: this.peerTable.get(hit.peerId)?.online ?? false,
        card: card.card
      })
    }
    return results
  }

  async resolve (nameOrId: string): Promise<string> {
    // a peer we hold already is keyed by its canonical id: no need to parse it again (hot in send)
    if (this.peerTable.has(nameOrId) || this.cardService.get(nameOrId) !== undefined) return nameOrId
    if (looksLikePeerId(nameOrId)) {
      try {
        return peerIdFromString(nameOrId).toString()
      } catch {}
    }
    if (nameOrId === this.name) return this.peerId
    const candidates = this.cardService.list().filter(c => c.card.name === nameOrId).map(c => ({ peerId: c.card.peerId, name: c.card.name }))
    if (candidates.length === 1) return candidates[0]!.peerId
    if (candidates.length > 1) throw new AmbiguousNameError(nameOrId, candidates)
    throw new NotFoundError(`no peer named ${nameOrId} among verified cards; try pmesh find or a PeerId`)
  }

  async delegate (target: DelegateTarget, input: JsonValue, options: DelegateOptions = {}): Promise<TaskInfo> {
    this.assertRunning()
    return this.taskService.delegate(target, input, options)
  }

  async trace (id: string): Promise<TraceReport> {
    this.assertRunning()
    const task = await this.taskService.get(id)
    const trace = task !== undefined ? traceId(task.trace) : /^[0-9a-f]{32}$/.test(id) ? id : undefined
    if (trace === undefined) throw new NotFoundError(`no task ${id} (give a task id or a 32-hex trace id)`)
    const events = (await this.store.audit.query({ trace, limit: 1000 })).entries
    const tasks = (await this.taskService.list({ limit: 1000 })).filter(t => traceId(t.trace) === trace)
    const tree = (info: TaskInfo): TaskTree => {
      // local knowledge of sub-tasks (ours) wins; reported subtrees fill in what peers did
      const local = tasks.filter(t => (t as TaskInfo & { parentId?: string }).parentId === info.id).map(tree)
      const reported = info.children.filter(c => !local.some(l => l.taskId === c.taskId))
      return { taskId: info.id, peer: info.peer, capability: info.capability, status: info.status, children: [...local, ...reported] }
    }
    const roots = task !== undefined ? [task] : tasks.filter(t => t.hop === 0 || !tasks.some(p => p.id === (t as TaskInfo & { parentId?: string }).parentId))
    return { traceId: trace, tasks: roots.map(tree), events }
  }

  async updateCard (profile: CardProfile): Promise<Card> {
    return (await this.cardService.update(profile)).card
  }

  private assertRunning (): void {
    if (!this.running) throw new NotStartedError(`node ${this.name} is not running`)
  }
}

/** Gossipsub scoring on the cards topic: every Rejected card costs its forwarder (P4). */
const CARD_TOPIC_SCORE = createTopicScoreParams({
  topicWeight: 1,
  timeInMeshWeight: 0,
  firstMessageDeliveriesWeight: 0,
  meshMessageDeliveriesWeight: 0,
  meshFailurePenaltyWeight: 0,
  invalidMessageDeliveriesWeight: -10,
  invalidMessageDeliveriesDecay: 0.5
})

function cursorOf (store: MeshStore | undefined): { cursor?: string } {
  const cursor = store?.inbox.endCursor()
  return cursor !== undefined ? { cursor } : {}
}

/** The mesh's own protocols, advertised in cards; a peer speaking rpc is a mesh peer. */
const MESH_PROTOCOLS = [RPC_PROTOCOL, CARD_PROTOCOL, ...DELIVER_PROTOCOLS, KAD_PROTOCOL]

function looksLikePeerId (value: string): boolean {
  return /^(12D3KooW|Qm|16Uiu2)[1-9A-HJ-NP-Za-km-z]{30,}$/.test(value) || /^b[a-z2-7]{50,}$/.test(value)
}

function parseMultiaddr (address: string): Multiaddr {
  try {
    return multiaddr(address)
  } catch (err) {
    throw new InvalidArgumentError(`not a multiaddr: ${address} (${(err as Error).message})`)
  }
}

/** Parsed request targets, by the string callers pass (most send to a handful of peers). */
const targets = new Map<string, PeerId | Multiaddr>()
const MAX_CACHED_TARGETS = 1024

function toTarget (peer: string | PeerId): PeerId | Multiaddr {
  if (typeof peer !== 'string') return peer
  let target = targets.get(peer)
  if (target === undefined) {
    target = parseTarget(peer)
    if (targets.size >= MAX_CACHED_TARGETS) targets.clear()
    targets.set(peer, target)
  }
  return target
}

function parseTarget (peer: string): PeerId | Multiaddr {
  if (peer.startsWith('/')) return parseMultiaddr(peer)
  try {
    return peerIdFromString(peer)
  } catch {
    throw new InvalidArgumentError(`not a PeerId or multiaddr: ${peer}`)
  }
}

/** A gossip message's id: the sha256 of its content. */
function contentId (data: Uint8Array): Buffer {
  return createHash('sha256').update(data).digest()
}

/**
 * Create a persona's node (started unless `start: false`). The identity is loaded from, or
 * created in, its data directory; its `config.json` supplies defaults that `init` overrides.
 */
export async function createMeshNode (options: MeshNodeInit = {}): Promise<MeshNode> {
  const name = validateName(options.name ?? defaultName())
  // an empty home is a mistake (it would mean the current directory), not a choice
  const dataDir = personaDir(options.home !== undefined && options.home !== '' ? options.home : defaultHome(), name)
  const config = await loadConfig(dataDir)
  const init: MeshNodeInit = {
    ...(config.listen !== undefined ? { listen: config.listen } : {}),
    ...(config.bootstrap !== undefined ? { bootstrap: config.bootstrap } : {}),
    ...(config.mdns !== undefined ? { mdns: config.mdns } : {}),
    ...(config.card !== undefined ? { card: config.card } : {}),
    ...(config.policy !== undefined ? { policy: config.policy } : {}),
    ...options
  }
  const privateKey = init.privateKey ?? (await loadOrCreateIdentity(dataDir)).privateKey
  for (const addr of [...(init.listen ?? []), ...(init.bootstrap ?? [])]) parseMultiaddr(addr)

  // libp2p fires `peer:discovery` only the first time a peer enters the peer store; listen to the
  // discovery services' own `peer` events too, or a known peer is never re-dialled after it drops
  let onDiscovered: (id: PeerId) => void = () => {}
  const dialing = (factory: (components: any) => PeerDiscovery) => (components: any): PeerDiscovery => {
    const service = factory(components)
    service.addEventListener('peer', (evt) => { onDiscovered(evt.detail.id) })
    return service
  }
  const peerDiscovery: Array<(components: any) => PeerDiscovery> = []
  if (init.bootstrap !== undefined && init.bootstrap.length > 0) {
    peerDiscovery.push(dialing(bootstrap({ list: init.bootstrap, timeout: 0 })))
  }
  if (init.mdns ?? true) {
    peerDiscovery.push(dialing(mdns()))
  }
  // ours, not libp2p's default, so the card service can read the DHT records this node holds
  const datastore = new MemoryDatastore()
  const libp2p = await createLibp2p({
    privateKey,
    datastore,
    start: false,
    addresses: {
      listen: init.listen ?? DEFAULT_LISTEN,
      // 127.0.0.1 told to a LAN peer points at the peer's own host: announce it only when it is all we have
      announceFilter: (addrs) => {
        const reachable = addrs.filter(ma => !isLoopback(ma))
        return reachable.length > 0 ? reachable : addrs
      }
    },
    transports: [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    peerDiscovery,
    connectionManager: {
      // many personas on one host all dial from one IP; the default (5/s) refuses them
      inboundConnectionThreshold: 100,
      maxConnections: 300
    },
    services: {
      identify: identify(),
      ping: ping({ maxInboundStreams: 32, maxOutboundStreams: 32 }),
      // a private DHT: only Persona Mesh nodes speak this protocol id; every node serves
      // (clientMode false) and keeps private/loopback addresses (our peers live on LANs)
      dht: kadDHT({
        protocol: KAD_PROTOCOL,
        datastorePrefix: DHT_DATASTORE_PREFIX,
        clientMode: false,
        peerInfoMapper: passthroughMapper
      }),
      pubsub: gossipsub({
        // everything we gossip (cards, broadcast envelopes) is signed by its author, and every
        // topic validator verifies that signature: a second gossipsub signature per message would
        // only double the signing and verifying. Message ids are the hash of the content.
        globalSignaturePolicy: 'StrictNoSign',
        // the library's default id (the same sha256) goes through an async WebCrypto call per
        // receipt, duplicates included; hashed in place it costs a few µs and no thread-pool hop
        msgIdFn: (msg) => contentId(msg.data),
        // we report reach ourselves; an empty topic is not an error
        allowPublishToZeroTopicPeers: true,
        emitSelf: false,
        scoreParams: {
          // many personas on one host (one IP) is normal here; the default colocation penalty
          // graylists all of them once a dozen share an address
          IPColocationFactorWeight: 0,
          // quiet topics: only invalid messages count, so honest but silent peers keep a neutral score
          topics: { [CARDS_TOPIC]: CARD_TOPIC_SCORE }
        }
      })
    }
  })
  const node = new DefaultMeshNode(name, dataDir, libp2p, privateKey, datastore, init)
  onDiscovered = (id) => { node.dialDiscovered(id) }
  if (init.start ?? true) {
    await node.start()
  }
  return node
}
