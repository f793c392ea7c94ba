import { isUlid, PRIORITIES, type Priority } from '@persona-mesh/protocol'
import { DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE } from './constants.js'
import { bytesSub, clampLimit, type Db, decodeCursor, decodeRecord, encodeCursor, encodePut, encodeRecord, indexSub, jsonSub, keyPart, pad, pageRange, plainBytes, type Range, SEP, type Sub, timestamp, under } from './db.js'
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

/**
 * What a queue record holds besides its key (`to`, priority, id) and the envelope: one binary
 * record (`encodeRecord`), so queueing an envelope is one operation and `pending` one range read.
 */
interface QueuedHeader {
  seq: number
  createdAt: number
  expiresAt: number
  attempts: number
  nextAttemptAt: number
  lastError?: string
}

const RANK: Record<Priority, string> = { high: '0', normal: '1', low: '2' }
const PRIORITY_OF_RANK: Record<string, Priority> = { 0: 'high', 1: 'normal', 2: 'low' }
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
  /** `${to}\0${rank}\0${id}` → queued entry and its envelope: iteration order is delivery order. */
  private readonly queue: Sub<Uint8Array>
  /** Envelopes of queued entries in the first layout (before they moved into the queue records): migrated on open. */
  private readonly legacyBytes: Sub<Uint8Array>
  /** id → status record, for every id ever added (until pruned). */
  private readonly status: Sub<OutboxRecord>
  /** `s\0status\0id`, `p\0to\0id`, `ps\0to\0status\0id`. */
  private readonly index: Sub<string>
  /** `${pad(expiresAt)}\0${id}` for queued entries. */
  private readonly expiry: Sub<string>

  private total = 0
  private readonly perPeer = new Map<string, number>()
  private nextSeq = 1
  /** Seqs up to here are durably reserved: a reopened store starts after it, whatever was handed out. */
  private seqReserved = 0
  /** The write reserving the next block, while it runs. */
  private reservation: Promise<void> | undefined
  private readonly adds: Coalescer<OutboxEntryInit[], AddResult[]>
  private readonly settles: Coalescer<Settlement, SettleResult[]>

  constructor (private readonly init: OutboxInit) {
    const { db } = init
    this.queue = bytesSub(db, 'ob')
    this.legacyBytes = bytesSub(db, 'obb')
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
        const header: QueuedHeader = {
          seq: e.seq,
          createdAt: e.createdAt,
          expiresAt: e.expiresAt,
          attempts: e.attempts ?? 0,
          nextAttemptAt: e.nextAttemptAt ?? 0
        }
        // three records: the queue entry (with the envelope), its status, its expiry. Listing
        // queued entries reads the queue itself, so there is no index to keep for them.
        txn.put(this.queue, queueKey(e.to, e.priority, e.id), encodeRecord(header, e.bytes))
        txn.put(this.expiry, expiryKey(e.expiresAt, e.id), '')
        txn.put(this.status, e.id, {
          id: e.id,
          to: e.to,
          priority: e.priority,
          seq: e.seq,
          status: 'queued',
          createdAt: e.createdAt,
          expiresAt: e.expiresAt,
          updatedAt: now,
          attempts: header.attempts
        })
      }
      for (const [to, n] of adding) bump(delta, to, n)
      txn.onCommit(() => { for (const [to, n] of adding) this.bumpCounters(to, n) })
      return results
    })
  }

  async pending (to: string, options: PendingOptions = {}): Promise<OutboxEntry[]> {
    this.init.guard()
    keyPart(to, 'to')
    const limit = clampLimit(options.limit, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
    const range: Range = { ...under(to + SEP), limit }
    if (options.after !== undefined) {
      const { priority, id } = options.after
      if (!PRIORITIES.includes(priority)) throw new InvalidRecordError(`unknown priority ${JSON.stringify(priority)}`)
      delete range.gte
      range.gt = queueKey(to, priority, keyPart(id, 'after id'))
    }
    const maxBytes = options.maxBytes ?? Number.POSITIVE_INFINITY
    if (!(maxBytes > 0)) throw new InvalidRecordError(`maxBytes must be a positive number, not ${String(maxBytes)}`)
    // bounded in bytes, a page is read in steps up to the bound: large envelopes must not come in whole pages
    const step = maxBytes === Number.POSITIVE_INFINITY ? limit : PENDING_CHUNK
    const out: OutboxEntry[] = []
    let bytes = 0
    const it = this.queue.iterator(range)
    try {
      while (bytes < maxBytes && out.length < limit) {
        const records = await it.nextv(Math.min(step, limit - out.length))
        options.signal?.throwIfAborted()
        if (records.length === 0) break
        for (const [key, value] of records) {
          const entry = toEntry(key, value)
          out.push(entry)
          bytes += entry.bytes.byteLength
          if (bytes >= maxBytes) break
        }
      }
    } finally {
      await it.close()
    }
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
      txn.del(this.expiry, expiryKey(rec.expiresAt, id))
      const next: OutboxRecord = withReason({ ...rec, status, updatedAt: now }, reason)
      this.putSettled(txn, next)
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
      const stored = await txn.get(this.queue, key)
      const record = stored === undefined ? undefined : decodeRecord<QueuedHeader>(stored)
      if (record === undefined) {
        return false
      }
      const next: QueuedHeader = { ...record.header, attempts, nextAttemptAt }
      if (update.lastError !== undefined) next.lastError = update.lastError
      txn.put(this.queue, key, encodeRecord(next, record.blob))
      txn.put(this.status, id, { ...rec, attempts, updatedAt: Date.now() })
      return true
    }, options)
  }

  async get (id: string, options: AbortOptions = {}): Promise<OutboxRecord | undefined> {
    this.init.guard()
    options.signal?.throwIfAborted()
    return await this.status.get(keyPart(id, 'id'))
  }

  /**
   * Where each listing reads (all in id order): nothing filtered: the status records. Queued: the
   * queue itself, merged across priorities (and recipients). Settled for a recipient: the
   * `ps\0to\0status\0id` index. Failed or expired: the `s\0status\0id` index. Delivered, the
   * common end state: the status records, filtered. By recipient: its queue and its settled
   * indexes, merged.
   */
  async list (query: OutboxListQuery = {}): Promise<Page<OutboxRecord>> {
    this.init.guard()
    const { status, to } = query
    if (status !== undefined && !STATUSES.includes(status)) {
      throw new InvalidRecordError(`unknown status ${String(status)}`)
    }
    if (to !== undefined) keyPart(to, 'to')
    const limit = clampLimit(query.limit, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
    const reverse = query.reverse ?? false
    const scan = async (filter?: (r: OutboxRecord) => boolean): Promise<Page<OutboxRecord>> => await readPage({
      primary: this.status,
      cursor: query.cursor,
      limit,
      reverse,
      map: filter === undefined ? (_key, record) => record : (_key, record) => filter(record) ? record : undefined,
      signal: query.signal
    })
    const queueSources = (peer: string): Source[] => (['0', '1', '2']).map(rank => ({ sub: this.queue, prefix: `${peer}${SEP}${rank}${SEP}` }))
    const settledSources = (peer: string): Source[] => TERMINAL.map(st => ({ sub: this.index, prefix: `ps${SEP}${peer}${SEP}${st}${SEP}` }))
    if (status === undefined && to === undefined) return await scan()
    if (status === 'queued') {
      const peers = to !== undefined ? [to] : [...this.perPeer.keys()]
      // very many recipients: reading every queue for one page costs more than a filtered scan
      if (peers.length > MAX_MERGED_RECIPIENTS) return await scan(r => r.status === 'queued')
      return await this.merged(peers.flatMap(queueSources), query, limit, reverse, r => r.status === 'queued')
    }
    if (to !== undefined && status !== undefined) return await this.merged([{ sub: this.index, prefix: `ps${SEP}${to}${SEP}${status}${SEP}` }], query, limit, reverse, r => r.status === status)
    if (to !== undefined) return await this.merged([...queueSources(to), ...settledSources(to)], query, limit, reverse, r => r.to === to)
    if (status === 'delivered') return await scan(r => r.status === 'delivered')
    return await this.merged([{ sub: this.index, prefix: `s${SEP}${status}${SEP}` }], query, limit, reverse, r => r.status === status)
  }

  /** One page of status records whose ids come from several key ranges, each in id order, merged. */
  private async merged (sources: Source[], query: OutboxListQuery, limit: number, reverse: boolean, keep: (r: OutboxRecord) => boolean): Promise<Page<OutboxRecord>> {
    const after = decodeCursor(query.cursor)
    const lists = await Promise.all(sources.map(async ({ sub, prefix }) => {
      const range = pageRange(prefix, after === undefined ? undefined : prefix + after, reverse)
      const keys = await sub.keys({ ...range, limit: limit + 1 }).all()
      return keys.map(k => k.slice(prefix.length))
    }))
    query.signal?.throwIfAborted()
    const ids = [...new Set(lists.flat())].sort()
    if (reverse) ids.reverse()
    const more = ids.length > limit
    const taken = ids.slice(0, limit)
    const records = taken.length === 0 ? [] : await this.status.getMany(taken)
    const entries: OutboxRecord[] = []
    for (const r of records) if (r !== undefined && keep(r)) entries.push(r)
    const page: Page<OutboxRecord> = { entries, more }
    const last = taken.at(-1)
    if (last !== undefined) page.nextCursor = encodeCursor(last)
    else if (query.cursor !== undefined && query.cursor !== '') page.nextCursor = query.cursor
    return page
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

  /**
   * Seqs come from a durably reserved block, so handing one out needs no write. The next block is
   * reserved (one synced write) when half of this one is used, so a steady stream of sends never
   * waits for that fsync; only a burst that outruns the reservation does.
   */
  async allocateSeq (n = 1, options: AbortOptions = {}): Promise<number> {
    this.init.guard()
    if (!Number.isSafeInteger(n) || n < 1) {
      throw new InvalidRecordError('allocateSeq needs a positive integer count')
    }
    for (;;) {
      options.signal?.throwIfAborted()
      const last = this.nextSeq + n - 1
      if (last <= this.seqReserved) {
        this.nextSeq += n
        if (this.seqReserved - last < this.init.seqBlock / 2) this.reserve(last).catch(() => {})
        return last - n + 1
      }
      await this.reserve(last)
    }
  }

  /** Reserve seqs past `last` (one block more), unless a reservation is running: then that one. */
  private async reserve (last: number): Promise<void> {
    this.reservation ??= (async () => {
      try {
        const reserved = Math.max(last, this.seqReserved) + this.init.seqBlock
        // encoded, as every write of a delivery round is: one sublevel op would send the whole
        // batch it joins down abstract-level's slow path
        await this.init.writer.write([encodePut(this.init.sys, SEQ_KEY, reserved)])
        this.seqReserved = Math.max(this.seqReserved, reserved)
      } finally {
        this.reservation = undefined
      }
    })()
    await this.reservation
  }

  /** Resolves once a running seq reservation is done. */
  async drain (): Promise<void> {
    await this.reservation?.catch(() => {})
  }

  /** A scan of the status records (it is rare; settled records are not indexed by age). */
  async pruneSettled (before: number, options: AbortOptions = {}): Promise<number> {
    this.init.guard()
    timestamp(before, 'before')
    let pruned = 0
    let after: string | undefined
    for (;;) {
      const chunk = await this.init.serial.run(async txn => {
        const records = await this.status.iterator({ ...(after === undefined ? {} : { gt: after }), limit: 1000 }).all()
        const ids = records.map(([id]) => id)
        // what this round sees (an overlay of earlier jobs of the round), not only what is on disk
        const current = ids.length === 0 ? [] : await txn.getMany(this.status, ids)
        let count = 0
        for (const rec of current) {
          if (rec !== undefined && rec.status !== 'queued' && rec.updatedAt < before) {
            txn.del(this.status, rec.id)
            txn.del(this.index, `ps${SEP}${rec.to}${SEP}${rec.status}${SEP}${rec.id}`)
            if (rec.status !== 'delivered') txn.del(this.index, `s${SEP}${rec.status}${SEP}${rec.id}`)
            count++
          }
        }
        return { count, last: ids.at(-1) }
      }, options)
      pruned += chunk.count
      if (chunk.last === undefined) break
      after = chunk.last
    }
    return pruned
  }

  /**
   * First layout → this one: queue records were JSON with the envelope in `obb`, now one binary
   * record; queued entries had index keys (`p`, `s\0queued`, `ps\0…\0queued`) and delivered
   * ones an `s\0delivered` key, which nothing reads any more. Done in synced chunks; a crash
   * midway is finished on the next open (each record says which layout it is in).
   */
  async migrate (): Promise<void> {
    let after: string | undefined
    for (;;) {
      const chunk = await this.queue.iterator({ ...(after === undefined ? {} : { gt: after }), limit: 500 }).all()
      if (chunk.length === 0) break
      after = chunk[chunk.length - 1][0]
      const old = chunk.filter(([, v]) => decodeRecord(v) === undefined)
      if (old.length === 0) continue
      const ids = old.map(([key]) => key.slice(key.lastIndexOf(SEP) + 1))
      const bytes = await this.legacyBytes.getMany(ids)
      await this.init.serial.run(txn => {
        old.forEach(([key, value], i) => {
          const q = JSON.parse(Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString('utf8')) as QueuedHeader
          const header: QueuedHeader = { seq: q.seq, createdAt: q.createdAt, expiresAt: q.expiresAt, attempts: q.attempts ?? 0, nextAttemptAt: q.nextAttemptAt ?? 0 }
          if (q.lastError !== undefined) header.lastError = q.lastError
          txn.put(this.queue, key, encodeRecord(header, plainBytes(bytes[i] ?? new Uint8Array(0))))
          txn.del(this.legacyBytes, ids[i])
        })
      })
    }
    // envelopes of entries no longer queued
    for (;;) {
      const keys = await this.legacyBytes.keys({ limit: 1000 }).all()
      if (keys.length === 0) break
      await this.init.serial.run(txn => { for (const k of keys) txn.del(this.legacyBytes, k) })
    }
    const unread = (k: string): boolean => k.startsWith(`p${SEP}`) || k.startsWith(`s${SEP}queued${SEP}`) || k.startsWith(`s${SEP}delivered${SEP}`) ||
      (k.startsWith(`ps${SEP}`) && k.split(SEP)[2] === 'queued')
    for (const prefix of [`p${SEP}`, `s${SEP}queued${SEP}`, `s${SEP}delivered${SEP}`, `ps${SEP}`]) {
      let from: string | undefined
      for (;;) {
        const range = under(prefix)
        const keys = await this.index.keys({ ...(from === undefined ? { gte: range.gte } : { gt: from }), lt: range.lt, limit: 1000 }).all()
        if (keys.length === 0) break
        from = keys[keys.length - 1]
        const stale = keys.filter(unread)
        if (stale.length > 0) await this.init.serial.run(txn => { for (const k of stale) txn.del(this.index, k) })
      }
    }
  }

  /** A settled status record, indexed by recipient and status, and (unless delivered) by status. */
  private putSettled (txn: Txn, record: OutboxRecord): void {
    txn.put(this.status, record.id, record)
    txn.put(this.index, `ps${SEP}${record.to}${SEP}${record.status}${SEP}${record.id}`, '')
    if (record.status !== 'delivered') txn.put(this.index, `s${SEP}${record.status}${SEP}${record.id}`, '')
  }

  private bumpCounters (to: string, n: number): void {
    const count = (this.perPeer.get(to) ?? 0) + n
    if (count <= 0) this.perPeer.delete(to)
    else this.perPeer.set(to, count)
    this.total += n
  }
}

/** Above this many recipients with queued entries, listing every queued entry scans the status records instead. */
const MAX_MERGED_RECIPIENTS = 64

interface Source {
  sub: Sub<any>
  /** Keys under it end in the id. */
  prefix: string
}

export interface PendingOptions extends AbortOptions {
  limit?: number
  /** Stop after the entry that brings the page's envelopes to this many bytes or more. */
  maxBytes?: number
  after?: Pick<OutboxEntry, 'priority' | 'id'>
}

/** Queue records read per step when a page is bounded in bytes. */
const PENDING_CHUNK = 128

/** A queue record as an entry: `to`, priority and id come from its key. */
function toEntry (key: string, value: Uint8Array): OutboxEntry {
  const a = key.indexOf(SEP)
  const b = key.indexOf(SEP, a + 1)
  const record = decodeRecord<QueuedHeader>(value)
  if (record === undefined) throw new InvalidRecordError(`outbox record ${key.slice(b + 1)} is in an unknown layout`)
  const h = record.header
  const entry: OutboxEntry = {
    id: key.slice(b + 1),
    to: key.slice(0, a),
    priority: PRIORITY_OF_RANK[key.slice(a + 1, b)],
    seq: h.seq,
    createdAt: h.createdAt,
    expiresAt: h.expiresAt,
    bytes: record.blob,
    attempts: h.attempts,
    nextAttemptAt: h.nextAttemptAt
  }
  if (h.lastError !== undefined) entry.lastError = h.lastError
  return entry
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
