import type { CardProfile } from './cards/index.js'
import type { PeerInfo } from './peers/peer-table.js'
import type { RequestOptions } from './rpc/index.js'
import type { BroadcastResult } from './broadcast/broadcast-service.js'
import type { DeliveryEvents, SendOptions, SendResult } from './delivery/index.js'
import type { MeshInbox } from './inbox/inbox-view.js'
import type { AuditEvent, AuditQuery, InboxEntry, OutboxRecord, OutboxStatus, Page } from '@persona-mesh/store'
import type { ResolvedPolicy } from './policy/policy.js'
import type { DelegateOptions, DelegateTarget, TaskInfo, TaskUpdate } from './tasks/index.js'
import type { TaskState, TaskTree, ToolSpec } from '@persona-mesh/protocol'
import type { Card, JsonValue } from '@persona-mesh/protocol'
import type { TypedEventTarget } from 'main-event'

/** A snapshot of a running persona's node. */
export interface MeshStatus {
  peerId: string
  name: string
  multiaddrs: string[]
  running: boolean
  /** ms since epoch; 0 when not running */
  startedAt: number
  connections: number
  /** PeerIds of connected peers */
  peers: string[]
  outbox: { queued: number }
  /** `cursor`: position of the newest entry, to read or wait for only what arrives after now */
  inbox: { unread: number, quarantined: number, cursor?: string }
  topics: string[]
}

/** The sender's view of durable messages: each ends delivered, expired or failed (with a reason). */
export interface MeshOutbox {
  get(id: string): Promise<OutboxRecord | undefined>
  list(query?: { status?: OutboxStatus, to?: string, limit?: number, cursor?: string, reverse?: boolean }): Promise<Page<OutboxRecord>>
}

export interface MeshEvents {
  /** A connection to a peer opened (detail: its PeerId). */
  'peer:connect': CustomEvent<string>
  /** The last connection to a peer closed (detail: its PeerId). */
  'peer:disconnect': CustomEvent<string>
  /** A new or updated verified card of a peer. */
  'peer:card': CustomEvent<Card>
  /** A mesh peer became reachable. */
  'peer:online': CustomEvent<PeerInfo>
  /** A mesh peer stayed unreachable past the threshold. */
  'peer:offline': CustomEvent<PeerInfo>
  'message:delivered': DeliveryEvents['message:delivered']
  'message:failed': DeliveryEvents['message:failed']
  'message:expired': DeliveryEvents['message:expired']
  /** A new message (or broadcast) in the inbox or quarantine. */
  'message:received': CustomEvent<InboxEntry>
  /** A task we delegated or received changed state. */
  'task:update': CustomEvent<TaskInfo>
}

export interface MeshTasks {
  list(query?: { direction?: 'incoming' | 'outgoing', status?: TaskState, limit?: number }): Promise<TaskInfo[]>
  get(id: string): Promise<TaskInfo | undefined>
  /** Resolve when the task ends. Throws `TimeoutError` / `AbortError` / `NotFoundError`. */
  wait(id: string, options?: { timeout?: number, signal?: AbortSignal }): Promise<TaskInfo>
  /** Cancel a task we delegated (the worker decides unless it never received it). */
  cancel(id: string): Promise<TaskInfo>
  /** The agent as worker: accept, report progress, complete, fail or reject a received task. */
  update(id: string, update: TaskUpdate): Promise<TaskInfo>
}

export interface MeshTools {
  /** A peer's tools from its verified card (ours without `peer`). */
  list(peer?: string): Promise<ToolSpec[]>
  /** Run a peer's tool; args are validated by the peer (NACK `invalid_request` with the reason). */
  call(peer: string, name: string, args: JsonValue, options?: RequestOptions): Promise<JsonValue>
}

export interface MeshAudit {
  query(query?: AuditQuery): Promise<Page<AuditEvent>>
}

export interface MeshPolicy {
  get(): Promise<ResolvedPolicy>
  /** Add to the allowlist (and off the deny list); saved to config.json. */
  allow(peer: string): Promise<ResolvedPolicy>
  /** Put on the deny list (and off the allowlist); saved to config.json. */
  deny(peer: string): Promise<ResolvedPolicy>
  mode(mode: 'open' | 'allowlist'): Promise<ResolvedPolicy>
}

/** A delegation chain as this persona knows it: its own tasks plus the subtrees peers reported. */
export interface TraceReport {
  traceId: string
  tasks: TaskTree[]
  events: AuditEvent[]
}

/** One answer of `find()`: a peer and its verified card, ranked. */
export interface FindResult {
  peerId: string
  name: string
  score: number
  /** Where the match came from: card fields, and/or `dht` for a provider record. */
  matched: string[]
  online: boolean
  card: Card
}

export interface FindOptions {
  /** @default 10 */
  limit?: number
  /** Ask the DHT for providers of an exact capability name too. @default true */
  dht?: boolean
  signal?: AbortSignal
}

/**
 * What a persona can do on the mesh. Implemented in-process by `MeshNode` and, for a running
 * daemon, by `connectMesh()`; the CLI and the MCP facade only ever see this interface.
 */
export interface Mesh extends TypedEventTarget<MeshEvents> {
  readonly peerId: string
  readonly name: string
  status(): Promise<MeshStatus>
  /** Connect to a peer by multiaddr (must end in `/p2p/<PeerId>`). */
  dial(multiaddr: string, options?: { signal?: AbortSignal }): Promise<void>
  /**
   * A live request to a peer (PeerId string or multiaddr). Resolves with the response body;
   * throws `NackError` (with the peer's reason), `TimeoutError`, `PeerUnreachableError`, …
   */
  request(peer: string, method: string, body: JsonValue, options?: RequestOptions): Promise<JsonValue>
  /** Mesh peers with their verified cards, liveness and RTT. */
  peers(options?: { onlineOnly?: boolean, signal?: AbortSignal }): Promise<PeerInfo[]>
  /**
   * A verified card: our own without `peer`; a peer's from the cache, else fetched from the
   * peer or the DHT. Throws `NotFoundError` when none can be had.
   */
  card(peer?: string, options?: { signal?: AbortSignal }): Promise<Card>
  /** Every verified card we hold of other peers. */
  cards(): Promise<Card[]>
  /** Search peers by capability, tool, name, tag or description; exact capability names also query the DHT. */
  find(query: string, options?: FindOptions): Promise<FindResult[]>
  /** A PeerId, or the unique name of a verified card, to a PeerId. Throws `NotFoundError` / `AmbiguousNameError`. */
  resolve(nameOrId: string): Promise<string>
  /** Change this persona's card; it is re-signed with a higher `seq` and republished. */
  updateCard(profile: CardProfile): Promise<Card>
  /**
   * Durable direct message to a peer (PeerId or name). Resolves once the signed envelope is
   * synced into the outbox (`status: 'queued'`); it then ends delivered, expired or failed,
   * reported by events and `outbox.get(id)`. Throws `QueueFullError`, `TooLargeError`, …
   */
  send(to: string, body: JsonValue, options?: SendOptions): Promise<SendResult>
  readonly outbox: MeshOutbox
  readonly inbox: MeshInbox
  /** Broadcast topics (best-effort gossip; subscriptions survive restarts). */
  subscribe(topic: string): Promise<string[]>
  unsubscribe(topic: string): Promise<string[]>
  topics(): Promise<string[]>
  /** Best-effort: reports how many peers it reached, with a warning when none. Not queued. */
  broadcast(topic: string, body: JsonValue, options?: { ttl?: number, thread?: string }): Promise<BroadcastResult>
  /**
   * Ask a peer (name or PeerId) or any peer offering `{ capability }` to do a task. Durable:
   * waits in the outbox if the worker is away. Falls over to the next candidate on
   * `overloaded`/`incapable`. Follow it with `tasks.get/wait` or `task:update` events.
   */
  delegate(target: DelegateTarget, input: JsonValue, options?: DelegateOptions): Promise<TaskInfo>
  readonly tasks: MeshTasks
  readonly tools: MeshTools
  readonly audit: MeshAudit
  readonly policy: MeshPolicy
  /** The chain of a task (by task id or trace id) across peers. */
  trace(id: string): Promise<TraceReport>
}

export type { TaskInfo, DelegateOptions, DelegateTarget, TaskUpdate, ResolvedPolicy, PeerInfo, CardProfile, MeshInbox, SendOptions, SendResult, BroadcastResult }
