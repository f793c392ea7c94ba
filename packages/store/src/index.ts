/**
 * @packageDocumentation
 *
 * Persona Mesh storage on LevelDB: outbox, inbox with cursors and dedupe keys, card cache, tasks,
 * audit log, meta. One owner per data directory; synced writes are group-committed.
 *
 * @example
 * ```ts
 * import { openStore } from '@persona-mesh/store'
 *
 * const store = await openStore({ path: '/home/me/.persona-mesh/aria/db', owner: { name: 'aria' } })
 * const seq = await store.outbox.allocateSeq()
 * await store.outbox.add([{ id, to, priority: 'normal', seq, createdAt, expiresAt, bytes }]) // durable now
 * const [state] = await store.inbox.accept([{ envelope, bytes, receivedAt: Date.now() }]) // 'stored' | 'duplicate'
 * const { entries, nextCursor } = await store.inbox.read({ unreadOnly: true, limit: 20 })
 * await store.close()
 * ```
 */
import type { JsonValue, MessageEnvelope, MessageKind, Priority } from '@persona-mesh/protocol'

export * from './constants.js'
export {
  InvalidRecordError,
  type OwnerInfo, 
  QueueFullError,
  StorageError,
  StorageFullError,
  StoreClosedError,
  StoreLockedError
} from './errors.js'
export { openStore } from './store.js'
export type { SyncWriterStats } from './writer.js'

/**
 * Every method that can wait takes this last. An abort rejects with `signal.reason` while the call
 * is still queued; once its batch is being written it completes. Store operations are local and
 * bounded, so there is no default timeout.
 */
export interface AbortOptions {
  signal?: AbortSignal
}

/**
 * One page of a listing. `nextCursor` is where to resume (after the last entry looked at; keep it
 * to follow a growing log), `more` says whether the listing stopped before the end.
 */
export interface Page<T> {
  entries: T[]
  nextCursor?: string
  more: boolean
}

// ---- outbox ------------------------------------------------------------------------------------

export type OutboxStatus = 'queued' | 'delivered' | 'expired' | 'failed'

/** What the delivery service hands to {@link Outbox.add}. */
export interface OutboxEntryInit {
  /** The envelope's ULID; FIFO order within a priority follows it. */
  id: string
  /** Recipient PeerId (string). */
  to: string
  priority: Priority
  seq: number
  createdAt: number
  expiresAt: number
  /** The sealed envelope, stored as-is. */
  bytes: Uint8Array
  /** @default 0 */
  attempts?: number
  /** @default 0 (due at once) */
  nextAttemptAt?: number
}

/** A queued outbox entry. */
export interface OutboxEntry {
  id: string
  to: string
  priority: Priority
  seq: number
  createdAt: number
  expiresAt: number
  bytes: Uint8Array
  attempts: number
  nextAttemptAt: number
  lastError?: string
}

/** The status record kept for every id ever added: queued, then exactly one terminal state. */
export interface OutboxRecord {
  id: string
  to: string
  priority: Priority
  seq: number
  status: OutboxStatus
  /** Why it failed or expired. */
  reason?: string
  createdAt: number
  expiresAt: number
  updatedAt: number
  attempts: number
}

export type SettleOutcome =
  | { status: 'delivered' }
  | { status: 'expired', reason?: string }
  | { status: 'failed', reason: string }

export interface SettleResult {
  id: string
  /** The state the id is in now (`unknown`: never added, or pruned). */
  status: OutboxStatus | 'unknown'
  reason?: string
  /** `true` if this call settled it; `false` if it was already settled (or unknown). */
  changed: boolean
}

export interface AddResult {
  id: string
  /** `false`: the id was already known (queued or settled); nothing was written for it. */
  added: boolean
}

export interface RescheduleInit {
  attempts: number
  nextAttemptAt: number
  lastError?: string
}

export interface OutboxListQuery extends AbortOptions {
  status?: OutboxStatus
  to?: string
  /** @default 100 */
  limit?: number
  cursor?: string
  /** Newest first. @default false */
  reverse?: boolean
}

export interface OutboxCounts {
  total: number
  perPeer: Record<string, number>
}

/** Sender side of durable delivery (DESIGN §7). */
export interface Outbox {
  /**
   * Queue entries durably (one synced batch, group-committed) with status `queued`. Ids already
   * known are skipped. Throws `QueueFullError` and writes nothing if a cap would be exceeded.
   */
  add (entries: OutboxEntryInit[], options?: AbortOptions): Promise<AddResult[]>
  /**
   * Queued entries for one recipient in delivery order: high, normal, low; FIFO (id order) within
   * each. With `after` (an entry returned before), only those after it in that order: a reader can
   * page through a long queue without reading what it already has in hand. With `maxBytes`, the
   * page ends with the entry that brings its envelopes to `maxBytes` or more (so a page shorter
   * than `limit` whose envelopes come to less than `maxBytes` reached the end of the queue).
   */
  pending (to: string, options?: { limit?: number, maxBytes?: number, after?: Pick<OutboxEntry, 'priority' | 'id'> } & AbortOptions): Promise<OutboxEntry[]>
  /** Recipients with something queued, and how much. From memory. */
  recipients (): Array<{ to: string, count: number }>
  /** Move queued ids to a terminal state (synced). Settling a settled id changes nothing and reports its state. */
  settle (ids: string[], outcome: SettleOutcome, options?: AbortOptions): Promise<SettleResult[]>
  /** Record a failed attempt. `false` if the id is no longer queued. */
  reschedule (id: string, update: RescheduleInit, options?: AbortOptions): Promise<boolean>
  get (id: string, options?: AbortOptions): Promise<OutboxRecord | undefined>
  list (query?: OutboxListQuery): Promise<Page<OutboxRecord>>
  /** Ids of queued entries with `expiresAt < now`, oldest expiry first. */
  expired (now: number, options?: { limit?: number } & AbortOptions): Promise<string[]>
  /** Queued entries, total and per recipient. O(1), from memory (rebuilt on open). */
  count (): OutboxCounts
  /**
   * Reserve `n` consecutive sequence numbers and return the first. Never repeats, across restarts
   * and crashes: blocks are reserved durably ahead of use, so a crash leaves a gap, never a reuse.
   */
  allocateSeq (n?: number, options?: AbortOptions): Promise<number>
  /** Delete terminal status records last updated before `before`. Returns how many. */
  pruneSettled (before: number, options?: AbortOptions): Promise<number>
}

// ---- inbox -------------------------------------------------------------------------------------

export interface InboxItem {
  /** The verified envelope. */
  envelope: MessageEnvelope
  /** The sealed envelope as received (provenance). */
  bytes: Uint8Array
  receivedAt: number
  /** Broadcast topic it came in on. */
  topic?: string
  /** Park it in quarantine (unknown sender) instead of the inbox. */
  quarantined?: boolean
}

export type AcceptResult = 'stored' | 'duplicate'

/** A receipt taken by {@link Inbox.receive}. `written` settles when its (unsynced) write is done. */
export interface ReceivedItem {
  entry: InboxEntry
  written: Promise<void>
}

/** One item's outcome from {@link Inbox.acceptEntries}: the entry as `get(id)` gives it, when stored. */
export interface AcceptedItem {
  status: AcceptResult
  entry?: InboxEntry
}
export type AckResult = 'acked' | 'already-acked' | 'unknown'
export type ReleaseResult = 'released' | 'not-quarantined' | 'unknown'

export interface InboxEntry {
  /** Position of this entry; `read({ cursor })` continues after it. */
  cursor: string
  id: string
  from: string
  to: string
  kind: MessageKind
  thread?: string
  replyTo?: string
  topic?: string
  priority: Priority
  createdAt: number
  expiresAt: number
  receivedAt: number
  body: JsonValue
  acked: boolean
  ackedAt?: number
  quarantined: boolean
  trace: string
  hop: number
  seq: number
}

export interface InboxQuery extends AbortOptions {
  /** Continue after this position. */
  cursor?: string
  from?: string
  thread?: string
  kind?: MessageKind | MessageKind[]
  topic?: string
  unreadOnly?: boolean
  /** Read the quarantine instead of the inbox. @default false */
  quarantined?: boolean
  /** @default 100 */
  limit?: number
}

/** Receiver side: durable, ordered by local receipt, deduplicated, readable with a cursor. */
export interface Inbox {
  /**
   * Store new envelopes with their dedupe keys and the senders' highest seq, in one synced batch.
   * An item is a duplicate if its id, or its sender + seq, was seen before (or earlier in this call).
   * Concurrent calls are serialized (and group-committed).
   */
  accept (items: InboxItem[], options?: AbortOptions): Promise<AcceptResult[]>
  /** {@link Inbox.accept}, handing back each stored entry too (no second read to announce it). */
  acceptEntries (items: InboxItem[], options?: AbortOptions): Promise<AcceptedItem[]>
  /**
   * A best-effort receipt (a broadcast), taken synchronously (point reads only): deduplicated (by id
   * and sender + seq, against what is stored and what is pending), given its position, and handed
   * back so the caller can announce it without waiting for the disk. The write follows, not
   * fsynced: it survives a crash of the process, not of the machine. `read`, `get`, `bytes`,
   * `ack` and `release` see it as soon as it is returned. `undefined`: a duplicate.
   */
  receive (item: InboxItem): ReceivedItem | undefined
  /** Peek: never consumes. */
  read (query?: InboxQuery): Promise<Page<InboxEntry>>
  get (id: string, options?: AbortOptions): Promise<InboxEntry | undefined>
  /** The sealed envelope of an entry. */
  bytes (id: string, options?: AbortOptions): Promise<Uint8Array | undefined>
  /** Mark handled (synced). */
  ack (ids: string[], options?: AbortOptions): Promise<AckResult[]>
  /** Move quarantined entries into the inbox, after everything received so far. */
  release (ids: string[], options?: AbortOptions): Promise<ReleaseResult[]>
  /** Unacked entries in the inbox (not the quarantine). O(1). */
  unread (): number
  /** Entries in quarantine. O(1). */
  quarantined (): number
  /** Cursor of the newest entry (inbox or quarantine), to read only what arrives after now. */
  endCursor (): string | undefined
  /** Highest seq accepted from a sender. */
  highestSeq (from: string, options?: AbortOptions): Promise<number | undefined>
  /**
   * Remove dedupe keys whose expiry is before `now` (two per message: id, sender + seq; the entry
   * itself stays). Returns how many.
   */
  pruneDedupe (now: number, options?: AbortOptions): Promise<number>
}

// ---- cards, tasks, audit, meta -------------------------------------------------------------------

export interface CardInit {
  seq: number
  /** The sealed card. */
  bytes: Uint8Array
  /** The decoded, verified card. */
  card: { [key: string]: JsonValue }
  verifiedAt: number
}

export interface CardRecord extends CardInit {
  peerId: string
  storedAt: number
}

export interface CardCache {
  /** Store a verified card (synced). Returns `false`, storing nothing, if a higher seq is held. */
  put (peerId: string, card: CardInit, options?: AbortOptions): Promise<boolean>
  get (peerId: string, options?: AbortOptions): Promise<CardRecord | undefined>
  list (options?: AbortOptions): Promise<CardRecord[]>
  delete (peerId: string, options?: AbortOptions): Promise<boolean>
}

export type TaskDirection = 'incoming' | 'outgoing'

export interface TaskRecord {
  id: string
  direction: TaskDirection
  status: string
  peer: string
  capability?: string
  [key: string]: JsonValue | undefined
}

export interface TaskQuery extends AbortOptions {
  direction?: TaskDirection
  status?: string
  peer?: string
  /** @default 100 */
  limit?: number
  cursor?: string
  reverse?: boolean
}

export interface TaskStore {
  /** Insert or replace (synced). */
  put (task: TaskRecord, options?: AbortOptions): Promise<void>
  get (id: string, options?: AbortOptions): Promise<TaskRecord | undefined>
  /** In id order (ULIDs: creation order). */
  list (query?: TaskQuery): Promise<Page<TaskRecord>>
  delete (id: string, options?: AbortOptions): Promise<boolean>
}

export interface AuditEvent {
  at: number
  kind: string
  peer?: string
  /** A traceparent or a bare 32-hex trace id; indexed by trace id. */
  trace?: string
  /** Message or task id. */
  id?: string
  outcome: string
  detail?: JsonValue
}

export interface AuditQuery extends AbortOptions {
  /** A traceparent or a 32-hex trace id: all spans of the trace. */
  trace?: string
  peer?: string
  id?: string
  /** Inclusive. */
  since?: number
  /** Exclusive. */
  until?: number
  /** @default 100 */
  limit?: number
  cursor?: string
}

export interface AuditLog {
  /** Batched, not synced: a crash may lose the last few events. */
  append (events: AuditEvent[], options?: AbortOptions): Promise<void>
  /**
   * `append` for one event, without waiting or hearing back: for the hot paths that log every
   * message. An invalid event throws `InvalidRecordError` here; a failed write loses the events of
   * its batch (as a crash would).
   */
  record (event: AuditEvent): void
  /** In time order. By trace, peer or id it reads an index, not the whole log. */
  query (query?: AuditQuery): Promise<Page<AuditEvent>>
  /** Delete events before `before`. Returns how many. */
  prune (before: number, options?: AbortOptions): Promise<number>
}

export interface MetaStore {
  get<T extends JsonValue = JsonValue> (key: string, options?: AbortOptions): Promise<T | undefined>
  /** Synced. */
  put (key: string, value: JsonValue, options?: AbortOptions): Promise<void>
  delete (key: string, options?: AbortOptions): Promise<void>
}

// ---- the store -----------------------------------------------------------------------------------

export interface StoreOwner {
  /** Persona name, shown to whoever finds the directory in use. */
  name: string
  /** @default process.pid */
  pid?: number
}

export interface OpenStoreOptions extends AbortOptions {
  /** The LevelDB directory (created if missing). `owner.json` is written inside it. */
  path: string
  owner?: StoreOwner
  /** @default 10_000 */
  maxQueuePerPeer?: number
  /** @default 100_000 */
  maxQueueTotal?: number
  /** How long dedupe keys are kept at least (and always until the envelope expires). @default 7 days */
  dedupeTtl?: number
  /** Sequence numbers reserved per durable write. @default 1000 */
  seqBlock?: number
}

export interface StoreStats {
  /** Group commit: batches (and how many of them were fsynced), the writes they carried, the operations written. */
  writer: { batches: number, synced: number, writes: number, ops: number }
}

export interface MeshStore {
  readonly path: string
  readonly outbox: Outbox
  readonly inbox: Inbox
  readonly cards: CardCache
  readonly tasks: TaskStore
  readonly audit: AuditLog
  readonly meta: MetaStore
  stats (): StoreStats
  /** Waits for queued writes, then closes. Idempotent. */
  close (): Promise<void>
}
