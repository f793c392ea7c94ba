import { readStoredEnvelope } from '@persona-mesh/protocol'
import { DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE } from './constants.js'
import { bytesSub, clampLimit, type Db, decodeRecord, encodeCursor, encodeRecord, indexSub, jsonSub, keyPart, pad, plainBytes, readMany, SEP, type Sub, timestamp, under } from './db.js'
import { fromLevel, InvalidRecordError } from './errors.js'
import type {
  AbortOptions,
  AcceptedItem,
  AcceptResult,
  AckResult,
  Inbox,
  InboxEntry,
  InboxItem,
  InboxQuery,
  Page,
  ReceivedItem,
  ReleaseResult
} from './index.js'
import { readPage } from './page.js'
import { Coalescer, type Serial, type Txn } from './serial.js'

/** An entry without its position (its receipt key). */
type Stored = Omit<InboxEntry, 'cursor'>

/**
 * The header of an entry's binary record; the sealed envelope as received is the blob. The body
 * is read from the envelope, not stored twice (it is most of a message's bytes, and every stored
 * byte is written again by LevelDB's compactions). Records written before carry it here too.
 */
type StoredHeader = Omit<Stored, 'body'> & { body?: Stored['body'] }

/**
 * Where an id lives: its receipt key, and whether in quarantine. `x`: while the id counts as seen
 * for deduplication, until when (the id half of the dedupe keys; `pruneDedupe` clears it).
 */
interface Location {
  key: string
  q: boolean
  x?: number
}

export interface InboxInit {
  db: Db
  serial: Serial
  guard: () => void
  dedupeTtl: number
}

/**
 * Per stored envelope one synced batch writes five records: the entry (header + sealed envelope
 * in one binary value), its id location (which is also the id's dedupe key), its unread mark, the
 * sender + seq dedupe key, and one expiry index key for both dedupe keys. Per sender and batch,
 * the highest seq.
 */
export class LevelInbox implements Inbox {
  /** receipt key → entry. Receipt keys are a counter, so iteration order is local receipt order. */
  private readonly entries: Sub<Uint8Array>
  private readonly quarantine: Sub<Uint8Array>
  private readonly byId: Sub<Location>
  /** receipt keys of unacked inbox (not quarantine) entries. */
  private readonly unreadIndex: Sub<string>
  /** `s\0${from}\0${seq}` → expiry. */
  private readonly dedupe: Sub<number>
  /** `${pad(expiry)}\0${id}\0${from}\0${seq}`: when both dedupe keys of a message expire. */
  private readonly dedupeExpiry: Sub<string>
  /** sender → highest seq accepted. */
  private readonly senders: Sub<number>
  /** First layout: envelopes by id (now inside the entries), and one expiry key per dedupe key. */
  private readonly legacyBytes: Sub<Uint8Array>
  private readonly legacyExpiry: Sub<string>

  /** sender → highest seq committed to `snd` (a cache; what is not in it is read from disk). */
  private readonly committedHighest = new Map<string, number>()
  private nextKey = 1
  private committedKey = 0
  private unreadCount = 0
  private quarantineCount = 0
  private readonly accepts: Coalescer<InboxItem[], AcceptedItem[]>
  /** Receipts taken by `receive` and not yet written: their dedupe keys, and their writes. */
  private readonly pendingIds = new Set<string>()
  private readonly pendingSeqs = new Set<string>()
  private readonly receiving = new Set<Promise<void>>()

  constructor (private readonly init: InboxInit) {
    const { db } = init
    this.entries = bytesSub(db, 'ib')
    this.quarantine = bytesSub(db, 'ibq')
    this.byId = jsonSub(db, 'ibid')
    this.unreadIndex = indexSub(db, 'ibu')
    this.dedupe = jsonSub(db, 'dd')
    this.dedupeExpiry = indexSub(db, 'ddx')
    this.senders = jsonSub(db, 'snd')
    this.legacyBytes = bytesSub(db, 'ibb')
    this.legacyExpiry = indexSub(db, 'dde')
    this.accepts = new Coalescer(init.serial, async (txn, calls) => await this.acceptAll(txn, calls))
  }

  async load (): Promise<void> {
    let last = 0
    for (const sub of [this.entries, this.quarantine]) {
      const [key] = await sub.keys({ reverse: true, limit: 1 }).all()
      if (key !== undefined) last = Math.max(last, Number(key))
    }
    this.nextKey = last + 1
    this.committedKey = last
    for await (const _ of this.unreadIndex.keys()) this.unreadCount++
    for await (const _ of this.quarantine.keys()) this.quarantineCount++
  }

  async accept (items: InboxItem[], options: AbortOptions = {}): Promise<AcceptResult[]> {
    return (await this.acceptEntries(items, options)).map(r => r.status)
  }

  async acceptEntries (items: InboxItem[], options: AbortOptions = {}): Promise<AcceptedItem[]> {
    this.init.guard()
    for (const item of items) validateItem(item)
    if (items.length === 0) {
      return []
    }
    return await this.accepts.call(items, options)
  }

  receive (item: InboxItem): ReceivedItem | undefined {
    this.init.guard()
    validateItem(item)
    const e = item.envelope
    const sk = seqKey(e.from, e.seq)
    if (this.pendingIds.has(e.id) || this.pendingSeqs.has(sk)) return undefined
    try {
      if (this.byId.getSync(e.id)?.x !== undefined || this.dedupe.getSync(sk) !== undefined) return undefined
    } catch (err) {
      throw fromLevel(err)
    }
    const key = pad(this.nextKey++)
    const stored = toStored(item)
    if (stored.quarantined) this.quarantineCount++
    else this.unreadCount++
    this.pendingIds.add(e.id)
    this.pendingSeqs.add(sk)
    const written = this.init.serial.run(async txn => {
      txn.sync = false
      const bound = await this.highestBounds(txn, [item])
      this.putEntry(txn, key, stored, item.bytes, sk)
      this.putHighest(txn, new Map([[e.from, e.seq]]), bound)
      txn.onCommit(() => { this.committedKey = Math.max(this.committedKey, Number(key)) })
    })
    const settled = written.then(() => {}, () => {
      if (stored.quarantined) this.quarantineCount--
      else this.unreadCount--
    }).finally(() => {
      this.pendingIds.delete(e.id)
      this.pendingSeqs.delete(sk)
      this.receiving.delete(settled)
    })
    this.receiving.add(settled)
    return { entry: toEntry(key, stored), written }
  }

  /** Resolves once every receipt taken by `receive` so far is written (or failed). */
  private async received (): Promise<void> {
    if (this.receiving.size > 0) await Promise.all(this.receiving)
  }

  /** Every `accept` call that queued up for this round, in call order: one read per kind of key, one batch. */
  private async acceptAll (txn: Txn, calls: InboxItem[][]): Promise<AcceptedItem[][]> {
    const items = calls.length === 1 ? calls[0] : calls.flat()
    const ids = new Array<string>(items.length)
    const seqKeys = new Array<string>(items.length)
    for (let i = 0; i < items.length; i++) {
      const e = items[i].envelope
      ids[i] = e.id
      seqKeys[i] = seqKey(e.from, e.seq)
    }
    // a sender's seq above the highest stored from it (committed, or earlier in this round) has no
    // dedupe key yet: only the others need looking up (senders mostly count upwards)
    const bound = await this.highestBounds(txn, items)
    const lookups: string[] = []
    for (let i = 0; i < items.length; i++) {
      const e = items[i].envelope
      if (e.seq <= (bound.get(e.from) ?? -1)) lookups.push(seqKeys[i])
    }
    const [locations, seqs] = await Promise.all([txn.getMany(this.byId, ids), lookups.length === 0 ? [] : txn.getMany(this.dedupe, lookups)])
    const seenIds = new Set<string>()
    const seenSeqs = new Set<string>()
    for (let i = 0; i < items.length; i++) {
      if (locations[i]?.x !== undefined) seenIds.add(ids[i])
    }
    for (let i = 0; i < lookups.length; i++) {
      if (seqs[i] !== undefined) seenSeqs.add(lookups[i])
    }
    const highest = new Map<string, number>()
    let unread = 0
    let quarantined = 0
    let lastKey = 0
    let at = 0
    const results = calls.map(call => call.map((item): AcceptedItem => {
      const e = item.envelope
      const sk = seqKeys[at++]
      if (seenIds.has(e.id) || seenSeqs.has(sk)) {
        return { status: 'duplicate' }
      }
      seenIds.add(e.id)
      seenSeqs.add(sk)
      lastKey = this.nextKey++
      const key = pad(lastKey)
      const stored = toStored(item)
      this.putEntry(txn, key, stored, item.bytes, sk)
      if (stored.quarantined) quarantined++
      else unread++
      const h = highest.get(e.from)
      if (h === undefined || e.seq > h) highest.set(e.from, e.seq)
      return { status: 'stored', entry: toEntry(key, stored) }
    }))
    this.putHighest(txn, highest, bound)
    if (lastKey > 0) {
      txn.onCommit(() => {
        this.unreadCount += unread
        this.quarantineCount += quarantined
        this.committedKey = Math.max(this.committedKey, lastKey)
      })
    }
    return results
  }

  /** Record the senders' new highest seqs (those above `bound`, what was stored before). */
  private putHighest (txn: Txn, highest: Map<string, number>, bound: Map<string, number | undefined>): void {
    if (highest.size === 0) return
    const round = roundHighest(txn)
    for (const [from, seq] of highest) {
      const held = bound.get(from)
      if (held === undefined || seq > held) {
        txn.put(this.senders, from, seq)
        round.set(from, seq)
      }
    }
    txn.onCommit(() => {
      if (this.committedHighest.size >= MAX_CACHED_SENDERS) this.committedHighest.clear()
      for (const [from, seq] of highest) {
        const held = this.committedHighest.get(from)
        if (held === undefined || seq > held) this.committedHighest.set(from, seq)
      }
    })
  }

  /** The writes that store a new entry at `key` with its dedupe keys (the id's location and `sk`). */
  private putEntry (txn: Txn, key: string, stored: Stored, bytes: Uint8Array, sk: string): void {
    // keep dedupe keys at least as long as the sender may retry
    const expiry = Math.max(stored.expiresAt, stored.receivedAt + this.init.dedupeTtl)
    const q = stored.quarantined
    const { body: _, ...header } = stored
    txn.put(q ? this.quarantine : this.entries, key, encodeRecord(header, bytes))
    txn.put(this.byId, stored.id, { key, q, x: expiry })
    if (!q) txn.put(this.unreadIndex, key, '')
    txn.put(this.dedupe, sk, expiry)
    txn.put(this.dedupeExpiry, `${pad(expiry)}${SEP}${stored.id}${SEP}${stored.from}${SEP}${stored.seq}`, '')
  }

  /**
   * For each sender of `items`, the highest seq stored from it so far: committed (cached, read
   * from `snd` the first time) or written earlier in this round. `undefined`: none yet.
   */
  private async highestBounds (txn: Txn, items: InboxItem[]): Promise<Map<string, number | undefined>> {
    const out = new Map<string, number | undefined>()
    const missing: string[] = []
    for (const { envelope: { from } } of items) {
      if (out.has(from)) continue
      out.set(from, this.committedHighest.get(from))
      if (!this.committedHighest.has(from)) missing.push(from)
    }
    if (missing.length > 0) {
      const held = await readMany(this.senders, missing)
      missing.forEach((from, i) => {
        const h = held[i]
        out.set(from, h)
        if (h !== undefined) this.committedHighest.set(from, h)
      })
    }
    const round = txn.scratch.get(ROUND_HIGHEST) as Map<string, number> | undefined
    if (round !== undefined) {
      for (const [from, seq] of round) {
        const h = out.get(from)
        if (out.has(from) && (h === undefined || seq > h)) out.set(from, seq)
      }
    }
    return out
  }

  async read (query: InboxQuery = {}): Promise<Page<InboxEntry>> {
    this.init.guard()
    await this.received()
    const quarantined = query.quarantined ?? false
    const unreadOnly = query.unreadOnly ?? false
    const kinds = query.kind === undefined ? undefined : new Set(Array.isArray(query.kind) ? query.kind : [query.kind])
    const { from, thread, topic } = query
    return await readPage({
      primary: quarantined ? this.quarantine : this.entries,
      // the unread index holds inbox entries only
      ...(unreadOnly && !quarantined ? { index: this.unreadIndex } : {}),
      cursor: query.cursor,
      limit: clampLimit(query.limit, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE),
      signal: query.signal,
      map: (key, value) => {
        const { header: s, blob } = decodeEntry(key, value)
        if ((unreadOnly && s.acked) ||
          (from !== undefined && s.from !== from) ||
          (thread !== undefined && s.thread !== thread) ||
          (topic !== undefined && s.topic !== topic) ||
          (kinds !== undefined && !kinds.has(s.kind))) {
          return undefined
        }
        return toEntry(key, withBody(key, s, blob))
      }
    })
  }

  async get (id: string, options: AbortOptions = {}): Promise<InboxEntry | undefined> {
    const found = await this.record(id, options)
    if (found === undefined) return undefined
    const { header, blob } = decodeEntry(found.key, found.value)
    return toEntry(found.key, withBody(found.key, header, blob))
  }

  async bytes (id: string, options: AbortOptions = {}): Promise<Uint8Array | undefined> {
    const found = await this.record(id, options)
    return found === undefined ? undefined : decodeRecord<StoredHeader>(found.value)?.blob
  }

  /** The stored record of `id` (inbox or quarantine) and its receipt key, once pending receipts are written. */
  private async record (id: string, options: AbortOptions): Promise<{ key: string, value: Uint8Array } | undefined> {
    this.init.guard()
    options.signal?.throwIfAborted()
    await this.received()
    const loc = await this.byId.get(keyPart(id, 'id'))
    if (loc === undefined) {
      return undefined
    }
    const value = await (loc.q ? this.quarantine : this.entries).get(loc.key)
    return value === undefined ? undefined : { key: loc.key, value }
  }

  async ack (ids: string[], options: AbortOptions = {}): Promise<AckResult[]> {
    this.init.guard()
    for (const id of ids) keyPart(id, 'id')
    if (ids.length === 0) {
      return []
    }
    return await this.init.serial.run(async txn => {
      const locs = await txn.getMany(this.byId, ids)
      const now = Date.now()
      let acked = 0
      const results: AckResult[] = []
      for (const loc of locs) {
        const sub = loc?.q === true ? this.quarantine : this.entries
        const value = loc === undefined ? undefined : await txn.get(sub, loc.key)
        const record = value === undefined ? undefined : decodeRecord<StoredHeader>(value)
        if (loc === undefined || record === undefined) {
          results.push('unknown')
        } else if (record.header.acked) {
          results.push('already-acked')
        } else {
          txn.put(sub, loc.key, encodeRecord({ ...record.header, acked: true, ackedAt: now }, record.blob))
          if (!loc.q) {
            txn.del(this.unreadIndex, loc.key)
            acked++
          }
          results.push('acked')
        }
      }
      if (acked > 0) txn.onCommit(() => { this.unreadCount -= acked })
      return results
    }, options)
  }

  async release (ids: string[], options: AbortOptions = {}): Promise<ReleaseResult[]> {
    this.init.guard()
    for (const id of ids) keyPart(id, 'id')
    if (ids.length === 0) {
      return []
    }
    return await this.init.serial.run(async txn => {
      let unread = 0
      let released = 0
      let lastKey = 0
      const results: ReleaseResult[] = []
      for (const id of ids) {
        const loc = await txn.get(this.byId, id)
        const value = loc === undefined ? undefined : await txn.get(loc.q ? this.quarantine : this.entries, loc.key)
        const record = value === undefined ? undefined : decodeRecord<StoredHeader>(value)
        if (loc === undefined || record === undefined) {
          results.push('unknown')
          continue
        }
        if (!loc.q) {
          results.push('not-quarantined')
          continue
        }
        // a new position at the end, so readers following the inbox with a cursor see it
        lastKey = this.nextKey++
        const key = pad(lastKey)
        txn.del(this.quarantine, loc.key)
        txn.put(this.entries, key, encodeRecord({ ...record.header, quarantined: false }, record.blob))
        txn.put(this.byId, id, loc.x === undefined ? { key, q: false } : { key, q: false, x: loc.x })
        if (!record.header.acked) {
          txn.put(this.unreadIndex, key, '')
          unread++
        }
        released++
        results.push('released')
      }
      if (released > 0) {
        txn.onCommit(() => {
          this.unreadCount += unread
          this.quarantineCount -= released
          this.committedKey = Math.max(this.committedKey, lastKey)
        })
      }
      return results
    }, options)
  }

  unread (): number {
    return this.unreadCount
  }

  quarantined (): number {
    return this.quarantineCount
  }

  endCursor (): string | undefined {
    return this.committedKey === 0 ? undefined : encodeCursor(pad(this.committedKey))
  }

  async highestSeq (from: string, options: AbortOptions = {}): Promise<number | undefined> {
    this.init.guard()
    options.signal?.throwIfAborted()
    return await this.senders.get(keyPart(from, 'from'))
  }

  async pruneDedupe (now: number, options: AbortOptions = {}): Promise<number> {
    this.init.guard()
    const bound = pad(timestamp(now, 'now'))
    let pruned = 0
    // first layout: one expiry key per dedupe key
    for (;;) {
      const n = await this.init.serial.run(async txn => {
        const keys = await this.legacyExpiry.keys({ lt: bound, limit: 2000 }).all()
        for (const k of keys) {
          txn.del(this.legacyExpiry, k)
          const dk = k.slice(k.indexOf(SEP) + 1)
          if (dk.startsWith(`i${SEP}`)) await this.forgetId(txn, dk.slice(2), undefined)
          else txn.del(this.dedupe, dk)
        }
        return keys.length
      }, options)
      pruned += n
      if (n === 0) break
    }
    // one expiry key per message, for its id and its sender + seq
    for (;;) {
      const n = await this.init.serial.run(async txn => {
        const keys = await this.dedupeExpiry.keys({ lt: bound, limit: 1000 }).all()
        const parsed = keys.map(k => k.split(SEP))
        const sks = parsed.map(([, , from, seq]) => seqKey(from, Number(seq)))
        const held = sks.length === 0 ? [] : await txn.getMany(this.dedupe, sks)
        for (let i = 0; i < keys.length; i++) {
          const [exp, id] = parsed[i]
          const expiry = Number(exp)
          txn.del(this.dedupeExpiry, keys[i])
          // a key stored again later (after it was pruned once) has its own, later expiry
          if (held[i] === expiry) txn.del(this.dedupe, sks[i])
          await this.forgetId(txn, id, expiry)
        }
        return keys.length * 2
      }, options)
      pruned += n
      if (n === 0) break
    }
    return pruned
  }

  /** The id no longer counts as seen (its entry stays readable). */
  private async forgetId (txn: Txn, id: string, expiry: number | undefined): Promise<void> {
    const loc = await txn.get(this.byId, id)
    if (loc?.x === undefined || (expiry !== undefined && loc.x !== expiry)) return
    txn.put(this.byId, id, { key: loc.key, q: loc.q })
  }

  /**
   * First layout → this one: entries were JSON with their envelope in `ibb`, and ids had their own
   * dedupe keys (`dd` `i\0id`). Converted in synced chunks; a crash midway is finished on the next
   * open (each entry says which layout it is in).
   */
  async migrate (): Promise<void> {
    for (const sub of [this.entries, this.quarantine]) {
      let after: string | undefined
      for (;;) {
        const chunk = await sub.iterator({ ...(after === undefined ? {} : { gt: after }), limit: 500 }).all()
        if (chunk.length === 0) break
        after = chunk[chunk.length - 1][0]
        const old = chunk.filter(([, v]) => decodeRecord(v) === undefined)
          .map(([key, v]) => ({ key, stored: JSON.parse(Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString('utf8')) as Stored }))
        if (old.length === 0) continue
        const bytes = await this.legacyBytes.getMany(old.map(o => o.stored.id))
        await this.init.serial.run(txn => {
          old.forEach(({ key, stored }, i) => {
            txn.put(sub, key, encodeRecord(stored, plainBytes(bytes[i] ?? new Uint8Array(0))))
            txn.del(this.legacyBytes, stored.id)
          })
        })
      }
    }
    for (;;) {
      const keys = await this.legacyBytes.keys({ limit: 1000 }).all()
      if (keys.length === 0) break
      await this.init.serial.run(txn => { for (const k of keys) txn.del(this.legacyBytes, k) })
    }
    for (;;) {
      const chunk = await this.dedupe.iterator({ ...under(`i${SEP}`), limit: 1000 }).all()
      if (chunk.length === 0) break
      await this.init.serial.run(async txn => {
        const locs = await txn.getMany(this.byId, chunk.map(([k]) => k.slice(2)))
        chunk.forEach(([k, expiry], i) => {
          const loc = locs[i]
          if (loc !== undefined) txn.put(this.byId, k.slice(2), { key: loc.key, q: loc.q, x: expiry })
          txn.del(this.dedupe, k)
        })
      })
    }
  }
}

/** Senders whose highest seq is kept in memory; past this the cache starts over. */
const MAX_CACHED_SENDERS = 10_000
const ROUND_HIGHEST = 'inbox.highest'

/** Highest seqs written by earlier jobs of this round, not yet committed. */
function roundHighest (txn: Txn): Map<string, number> {
  let m = txn.scratch.get(ROUND_HIGHEST) as Map<string, number> | undefined
  if (m === undefined) {
    m = new Map()
    txn.scratch.set(ROUND_HIGHEST, m)
  }
  return m
}

function seqKey (from: string, seq: number): string {
  return `s${SEP}${from}${SEP}${seq}`
}

function decodeEntry (key: string, value: Uint8Array): { header: StoredHeader, blob: Uint8Array } {
  const r = decodeRecord<StoredHeader>(value)
  if (r === undefined) throw new InvalidRecordError(`inbox entry ${key} is in an unknown layout`)
  return r
}

/** The entry of a record: its header, and the body from the envelope unless the header has it (older records). */
function withBody (key: string, header: StoredHeader, blob: Uint8Array): Stored {
  if ('body' in header) return header as Stored
  let body: Stored['body']
  try {
    body = readStoredEnvelope(blob).body
  } catch (err) {
    throw new InvalidRecordError(`inbox entry ${key}: its stored envelope does not decode: ${(err as Error).message}`, { cause: err })
  }
  return { ...header, body }
}

function toStored (item: InboxItem): Stored {
  const e = item.envelope
  const stored: Stored = {
    id: e.id,
    from: e.from,
    to: e.to,
    kind: e.kind,
    priority: e.priority,
    createdAt: e.createdAt,
    expiresAt: e.expiresAt,
    receivedAt: item.receivedAt,
    body: e.body,
    acked: false,
    quarantined: item.quarantined === true,
    trace: e.trace,
    hop: e.hop,
    seq: e.seq
  }
  if (e.thread !== undefined) stored.thread = e.thread
  if (e.replyTo !== undefined) stored.replyTo = e.replyTo
  if (item.topic !== undefined) stored.topic = item.topic
  return stored
}

function toEntry (key: string, s: Stored): InboxEntry {
  return { cursor: encodeCursor(key), ...s }
}

function validateItem (item: InboxItem): void {
  const e = item?.envelope
  if (typeof e !== 'object' || e === null) {
    throw new InvalidRecordError('inbox item needs an envelope')
  }
  keyPart(e.id, 'envelope id')
  keyPart(e.from, 'envelope from')
  if (typeof e.to !== 'string') throw new InvalidRecordError('envelope to must be a string')
  timestamp(e.seq, 'envelope seq')
  timestamp(e.createdAt, 'envelope createdAt')
  timestamp(e.expiresAt, 'envelope expiresAt')
  timestamp(item.receivedAt, 'receivedAt')
  if (!(item.bytes instanceof Uint8Array)) {
    throw new InvalidRecordError('inbox item bytes must be a Uint8Array')
  }
  if (item.topic !== undefined && typeof item.topic !== 'string') {
    throw new InvalidRecordError('topic must be a string')
  }
}
