import { isUlid, PRIORITIES, type Priority } from '@persona-mesh/protocol'
import { DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE } from './constants.js'
import { bytesSub, clampLimit, type Db, indexSub, jsonSub, keyPart, pad, plainBytes, SEP, type Sub, timestamp, under } from './db.js'
import { InvalidRecordError, QueueFullError } from './errors.js'
import type {
  AbortOptions,
  AddResult,
  Outbox,
  OutboxCounts,
  OutboxEntry,
  OutboxEntryInit,
  OutboxListQuery,
  OutboxRecord,
  OutboxStatus,
  Page,
  RescheduleInit,
  SettleOutcome,
  SettleResult
} from './index.js'
import { readPage } from './page.js'
import { Coalescer, type Serial, type Txn } from './serial.js'
import type { SyncWriter } from './writer.js'

/** Queued entry as stored (the bytes live in their own sublevel). */
type Queued = Omit<OutboxEntry, 'bytes'>

const RANK: Record<Priority, string> = { high: '0', normal: '1', low: '2' }
const STATUSES: readonly OutboxStatus[] = ['queued', 'delivered', 'expired', 'failed']
const TERMINAL: readonly OutboxStatus[] = ['delivered', 'expired', 'failed']
const SEQ_KEY = 'outbox.seq'

export interface OutboxInit {
  db: Db
  serial: Serial
  writer: SyncWriter
  /** Internal bookkeeping (seq reservations). */
  sys: Sub<unknown>
  guard: () => void
  maxPerPeer: number
  maxTotal: number
  seqBlock: number
}

interface Settlement {
  ids: string[]
  status: 'delivered' | 'expired' | 'failed'
  reason?: string
}

/** Round-local counter changes: applied to the real counters once the round's batch is durable. */
interface Delta {
  total: number
  peers: Map<string, number>
}

export class LevelOutbox implements Outbox {
  /** `${to}\0${rank}\0${id}` → queued entry: iteration order is delivery order. */
  private readonly queue: Sub<Queued>
  private readonly bytesById: Sub<Uint8Array>
  /** id → status record, for every id ever added (until pruned). */
  private readonly status: Sub<OutboxRecord>
  /** `s\0status\0id`, `p\0to\0id`, `ps\0to\0status\0id`. */
  private readonly index: Sub<string>
  /** `${pad(expiresAt)}\0${id}` for queued entries. */
  private readonly expiry: Sub<string>

  private total = 0
  private readonly perPeer = new Map<string, number>()
  private nextSeq = 1
  private seqReserved = 0
  private seqLock: Promise<unknown> = Promise.resolve()
  private readonly adds: Coalescer<OutboxEntryInit[], AddResult[]>
  private readonly settles: Coalescer<Settlement, SettleResult[]>

  constructor (private readonly init: OutboxInit) {
    const { db } = init
    this.queue = jsonSub(db, 'ob')
    this.bytesById = bytesSub(db, 'obb')
    this.status = jsonSub(db, 'obs')
    this.index = indexSub(db, 'obx')
    this.expiry = indexSub(db, 'obe')
    this.adds = new Coalescer(init.serial, async (txn, calls) => await this.addAll(txn, calls))
    this.settles = new Coalescer(init.serial, async (txn, calls) => await this.settleAll(txn, calls))
  }

  /** Rebuild the counters and the seq position from disk. */
  async load (): Promise<void> {
    for await (const key of this.queue.keys()) {
      const to = key.slice(0, key.indexOf(SEP))
      this.perPeer.set(to, (this.perPeer.get(to) ?? 0) + 1)
      this.total++
    }
    const reserved = await this.init.sys.get(SEQ_KEY)
    this.seqReserved = typeof reserved === 'number' ? reserved : 0
    this.nextSeq = this.seqReserved + 1
  }

  async add (entries: OutboxEntryInit[], options: AbortOptions = {}): Promise<AddResult[]> {
    this.init.guard()
    const checked = entries.map(validateEntry)
    if (checked.length === 0) {
      return []
    }
    return await this.adds.call(checked, options)
  }

  /** Every `add` call that queued up for this round, in call order. */
  private async addAll (txn: Txn, calls: OutboxEntryInit[][]): Promise<Array<AddResult[] | Error>> {
    const ids = calls.flat().map(e => e.id)
    const records = await txn.getMany(this.status, ids)
    const known = new Set(ids.filter((_, i) => records[i] !== undefined))
    const delta = roundDelta(txn)
    const now = Date.now()
    return calls.map(entries => {
      const seen = new Set<string>()
      const fresh: OutboxEntryInit[] = []
      const results = entries.map((entry): AddResult => {
        if (known.has(entry.id) || seen.has(entry.id)) {
          return { id: entry.id, added: false }
        }
        seen.add(entry.id)
        fresh.push(entry)
        return { id: entry.id, added: true }
      })

      // caps: committed counters + what this round did so far + this call; a full queue fails this call only
      const adding = new Map<string, number>()
      for (const e of fresh) adding.set(e.to, (adding.get(e.to) ?? 0) + 1)
      for (const [to, n] of adding) {
        if ((this.perPeer.get(to) ?? 0) + (delta.peers.get(to) ?? 0) + n > this.init.maxPerPeer) {
          return new QueueFullError('peer', this.init.maxPerPeer, to)
        }
      }
      if (this.total + delta.total + fresh.length > this.init.maxTotal) {
        return new QueueFullError('total', this.init.maxTotal)
      }

      for (const e of fresh) {
        known.add(e.id)
        const queued: Queued = {
          id: e.id,
          to: e.to,
          priority: e.priority,
          seq: e.seq,
          createdAt: e.createdAt,
          expiresAt: e.expiresAt,
          attempts: e.attempts ?? 0,
          nextAttemptAt: e.nextAttemptAt ?? 0
        }
        txn.put(this.queue, queueKey(e.to, e.priority, e.id), queued)
        txn.put(this.bytesById, e.id, e.bytes)
        txn.put(this.expiry, expiryKey(e.expiresAt, e.id), '')
        txn.put(this.index, `p${SEP}${e.to}${SEP}${e.id}`, '')
        this.putStatus(txn, {
          id: e.id,
          to: e.to,
          priority: e.priority,
          seq: e.seq,
          status: 'queued',
          createdAt: e.createdAt,
          expiresAt: e.expiresAt,
          updatedAt: now,
          attempts: queued.attempts
        })
      }
      for (const [to, n] of adding) bump(delta, to, n)
      txn.onCommit(() => { for (const [to, n] of adding) this.bumpCounters(to, n) })
      return results
    })
  }

  async pending (to: string, options: { limit?: number } & AbortOptions = {}): Promise<OutboxEntry[]> {
    this.init.guard()
    keyPart(to, 'to')
    const limit = clampLimit(options.limit, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
    const queued = await this.queue.values({ ...under(to + SEP), limit }).all()
    options.signal?.throwIfAborted()
    if (queued.length === 0) {
      return []
    }
    const bytes = await this.bytesById.getMany(queued.map(q => q.id))
    const out: OutboxEntry[] = []
    queued.forEach((q, i) => {
      const b = bytes[i]
      // settled between the two reads: gone
      if (b !== undefined) out.push({ ...q, bytes: plainBytes(b) })
    })
    return out
  }

  recipients (): Array<{ to: string, count: number }> {
    return [...this.perPeer].map(([to, count]) => ({ to, count }))
  }

  async settle (ids: string[], outcome: SettleOutcome, options: AbortOptions = {}): Promise<SettleResult[]> {
    this.init.guard()
    for (const id of ids) keyPart(id, 'id')
    if (!TERMINAL.includes(outcome.status)) {
      throw new InvalidRecordError(`cannot settle as ${String(outcome.status)}`)
    }
    const reason = 'reason' in outcome && typeof outcome.reason === 'string' ? outcome.reason : undefined
    if (outcome.status === 'failed' && (reason === undefined || reason === '')) {
      throw new InvalidRecordError('a failed settlement needs a reason')
    }
    if (ids.length === 0) {
      return []
    }
    return await this.settles.call(reason === undefined ? { ids, status: outcome.status } : { ids, status: outcome.status, reason }, options)
  }

  /** Every `settle` call that queued up for this round, in call order. */
  private async settleAll (txn: Txn, calls: Settlement[]): Promise<SettleResult[][]> {
    const ids = [...new Set(calls.flatMap(c => c.ids))]
    const records = await txn.getMany(this.status, ids)
    const current = new Map<string, OutboxRecord | undefined>(ids.map((id, i) => [id, records[i]]))
    const delta = roundDelta(txn)
    const removed = new Map<string, number>()
    const now = Date.now()
    const results = calls.map(({ ids, status, reason }) => ids.map((id): SettleResult => {
      const rec = current.get(id)
      if (rec === undefined) {
        return { id, status: 'unknown', changed: false }
      }
      if (rec.status !== 'queued') {
        return withReason({ id, status: rec.status, changed: false }, rec.reason)
      }
      txn.del(this.queue, queueKey(rec.to, rec.priority, id))
      txn.del(this.bytesById, id)
      txn.del(this.expiry, expiryKey(rec.expiresAt, id))
      this.delStatusIndex(txn, rec)
      const next: OutboxRecord = withReason({ ...rec, status, updatedAt: now }, reason)
      this.putStatus(txn, next)
      current.set(id, next)
      removed.set(rec.to, (removed.get(rec.to) ?? 0) + 1)
      return withReason({ id, status, changed: true }, reason)
    }))
    for (const [to, n] of removed) bump(delta, to, -n)
    txn.onCommit(() => { for (const [to, n] of removed) this.bumpCounters(to, -n) })
    return results
  }

  async reschedule (id: string, update: RescheduleInit, options: AbortOptions = {}): Promise<boolean> {
    this.init.guard()
    keyPart(id, 'id')
    const attempts = timestamp(update.attempts, 'attempts')
    const nextAttemptAt = timestamp(update.nextAttemptAt, 'nextAttemptAt')
    return await this.init.serial.run(async txn => {
      const rec = await txn.get(this.status, id)
      if (rec?.status !== 'queued') {
        return false
      }
      const key = queueKey(rec.to, rec.priority, id)
      const queued = await txn.get(this.queue, key)
      if (queued === undefined) {
        return false
      }
      const next: Queued = { ...queued, attempts, nextAttemptAt }
      if (update.lastError !== undefined) next.lastError = update.lastError
      txn.put(this.queue, key, next)
      txn.put(this.status, id, { ...rec, attempts, updatedAt: Date.now() })
      return true
    }, options)
  }

  async get (id: string, options: AbortOptions = {}): Promise<OutboxRecord | undefined> {
    this.init.guard()
    options.signal?.throwIfAborted()
    return await this.status.get(keyPart(id, 'id'))
  }

  async list (query: OutboxListQuery = {}): Promise<Page<OutboxRecord>> {
    this.init.guard()
    const { status, to } = query
    if (status !== undefined && !STATUSES.includes(status)) {
      throw new InvalidRecordError(`unknown status ${String(status)}`)
    }
    if (to !== undefined) keyPart(to, 'to')
    let prefix: string | undefined
    if (to !== undefined && status !== undefined) prefix = `ps${SEP}${to}${SEP}${status}${SEP}`
    else if (to !== undefined) prefix = `p${SEP}${to}${SEP}`
    else if (status !== undefined) prefix = `s${SEP}${status}${SEP}`
    return await readPage({
      primary: this.status,
      ...(prefix === undefined ? {} : { index: this.index, prefix }),
      cursor: query.cursor,
      limit: clampLimit(query.limit, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE),
      reverse: query.reverse ?? false,
      map: (_key, record) => record,
      signal: query.signal
    })
  }

  async expired (now: number, options: { limit?: number } & AbortOptions = {}): Promise<string[]> {
    this.init.guard()
    const limit = clampLimit(options.limit, MAX_PAGE_SIZE, MAX_PAGE_SIZE)
    const keys = await this.expiry.keys({ lt: pad(timestamp(now, 'now')), limit }).all()
    return keys.map(k => k.slice(k.indexOf(SEP) + 1))
  }

  count (): OutboxCounts {
    return { total: this.total, perPeer: Object.fromEntries(this.perPeer) }
  }

  async allocateSeq (n = 1, options: AbortOptions = {}): Promise<number> {
    this.init.guard()
    if (!Number.isSafeInteger(n) || n < 1) {
      throw new InvalidRecordError('allocateSeq needs a positive integer count')
    }
    const run = this.seqLock.then(async () => {
      options.signal?.throwIfAborted()
      const last = this.nextSeq + n - 1
      if (last > this.seqReserved) {
        const reserved = last + this.init.seqBlock
        await this.init.writer.write([{ type: 'put', sublevel: this.init.sys, key: SEQ_KEY, value: reserved }])
        this.seqReserved = reserved
      }
      const first = this.nextSeq
      this.nextSeq += n
      return first
    })
    this.seqLock = run.catch(() => {})
    return await run
  }

  /** Resolves once a running seq reservation is done. */
  async drain (): Promise<void> {
    await this.seqLock
  }

  async pruneSettled (before: number, options: AbortOptions = {}): Promise<number> {
    this.init.guard()
    timestamp(before, 'before')
    let pruned = 0
    for (const status of TERMINAL) {
      const range = under(`s${SEP}${status}${SEP}`)
      let after: string | undefined
      for (;;) {
        const chunk = await this.init.serial.run(async txn => {
          const keys = await this.index.keys({ ...(after === undefined ? { gte: range.gte } : { gt: after }), lt: range.lt, limit: 1000 }).all()
          const ids = keys.map(k => k.slice(k.lastIndexOf(SEP) + 1))
          const records = ids.length === 0 ? [] : await txn.getMany(this.status, ids)
          let count = 0
          for (const rec of records) {
            if (rec !== undefined && rec.status === status && rec.updatedAt < before) {
              txn.del(this.status, rec.id)
              this.delStatusIndex(txn, rec)
              txn.del(this.index, `p${SEP}${rec.to}${SEP}${rec.id}`)
              count++
            }
          }
          return { count, last: keys.at(-1) }
        }, options)
        pruned += chunk.count
        if (chunk.last === undefined) break
        after = chunk.last
      }
    }
    return pruned
  }

  private putStatus (txn: Txn, record: OutboxRecord): void {
    txn.put(this.status, record.id, record)
    txn.put(this.index, `s${SEP}${record.status}${SEP}${record.id}`, '')
    txn.put(this.index, `ps${SEP}${record.to}${SEP}${record.status}${SEP}${record.id}`, '')
  }

  private delStatusIndex (txn: Txn, record: OutboxRecord): void {
    txn.del(this.index, `s${SEP}${record.status}${SEP}${record.id}`)
    txn.del(this.index, `ps${SEP}${record.to}${SEP}${record.status}${SEP}${record.id}`)
  }

  private bumpCounters (to: string, n: number): void {
    const count = (this.perPeer.get(to) ?? 0) + n
    if (count <= 0) this.perPeer.delete(to)
    else this.perPeer.set(to, count)
    this.total += n
  }
}

function queueKey (to: string, priority: Priority, id: string): string {
  return `${to}${SEP}${RANK[priority]}${SEP}${id}`
}

function expiryKey (expiresAt: number, id: string): string {
  return `${pad(expiresAt)}${SEP}${id}`
}

function roundDelta (txn: Txn): Delta {
  let delta = txn.scratch.get('outbox') as Delta | undefined
  if (delta === undefined) {
    delta = { total: 0, peers: new Map() }
    txn.scratch.set('outbox', delta)
  }
  return delta
}

function bump (delta: Delta, to: string, n: number): void {
  delta.total += n
  delta.peers.set(to, (delta.peers.get(to) ?? 0) + n)
}

function withReason<T extends object> (value: T, reason: string | undefined): T & { reason?: string } {
  return reason === undefined ? value : { ...value, reason }
}

function validateEntry (e: OutboxEntryInit): OutboxEntryInit {
  if (typeof e !== 'object' || e === null) {
    throw new InvalidRecordError('outbox entry must be an object')
  }
  if (typeof e.id !== 'string' || !isUlid(e.id)) {
    throw new InvalidRecordError(`outbox entry id must be a ULID, got ${JSON.stringify(e.id)}`)
  }
  keyPart(e.to, 'to')
  if (!PRIORITIES.includes(e.priority)) {
    throw new InvalidRecordError(`unknown priority ${JSON.stringify(e.priority)}`)
  }
  timestamp(e.seq, 'seq')
  timestamp(e.createdAt, 'createdAt')
  timestamp(e.expiresAt, 'expiresAt')
  if (e.attempts !== undefined) timestamp(e.attempts, 'attempts')
  if (e.nextAttemptAt !== undefined) timestamp(e.nextAttemptAt, 'nextAttemptAt')
  if (!(e.bytes instanceof Uint8Array)) {
    throw new InvalidRecordError('outbox entry bytes must be a Uint8Array')
  }
  return e
}
