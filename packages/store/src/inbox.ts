import { DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE } from './constants.js'
import { bytesSub, clampLimit, type Db, encodeCursor, indexSub, jsonSub, keyPart, pad, plainBytes, SEP, type Sub, timestamp } from './db.js'
import { InvalidRecordError } from './errors.js'
import type {
  AbortOptions,
  AcceptResult,
  AckResult,
  Inbox,
  InboxEntry,
  InboxItem,
  InboxQuery,
  Page,
  ReleaseResult
} from './index.js'
import { readPage } from './page.js'
import { Coalescer, type Serial, type Txn } from './serial.js'

/** An entry as stored; its receipt key is its position. */
type Stored = Omit<InboxEntry, 'cursor'>

/** Where an id lives: its receipt key, and whether in quarantine. */
interface Location {
  key: string
  q: boolean
}

export interface InboxInit {
  db: Db
  serial: Serial
  guard: () => void
  dedupeTtl: number
}

export class LevelInbox implements Inbox {
  /** receipt key → entry. Receipt keys are a counter, so iteration order is local receipt order. */
  private readonly entries: Sub<Stored>
  private readonly quarantine: Sub<Stored>
  private readonly bytesById: Sub<Uint8Array>
  private readonly byId: Sub<Location>
  /** receipt keys of unacked inbox (not quarantine) entries. */
  private readonly unreadIndex: Sub<string>
  /** `i\0${id}` and `s\0${from}\0${seq}` → expiry. */
  private readonly dedupe: Sub<number>
  /** `${pad(expiry)}\0${dedupe key}`. */
  private readonly dedupeExpiry: Sub<string>
  /** sender → highest seq accepted. */
  private readonly senders: Sub<number>

  private nextKey = 1
  private committedKey = 0
  private unreadCount = 0
  private quarantineCount = 0
  private readonly accepts: Coalescer<InboxItem[], AcceptResult[]>

  constructor (private readonly init: InboxInit) {
    const { db } = init
    this.entries = jsonSub(db, 'ib')
    this.quarantine = jsonSub(db, 'ibq')
    this.bytesById = bytesSub(db, 'ibb')
    this.byId = jsonSub(db, 'ibid')
    this.unreadIndex = indexSub(db, 'ibu')
    this.dedupe = jsonSub(db, 'dd')
    this.dedupeExpiry = indexSub(db, 'dde')
    this.senders = jsonSub(db, 'snd')
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
    this.init.guard()
    for (const item of items) validateItem(item)
    if (items.length === 0) {
      return []
    }
    return await this.accepts.call(items, options)
  }

  /** Every `accept` call that queued up for this round, in call order: one read, one batch. */
  private async acceptAll (txn: Txn, calls: InboxItem[][]): Promise<AcceptResult[][]> {
    const items = calls.flat()
    const keys = items.flatMap(({ envelope: e }) => [idKey(e.id), seqKey(e.from, e.seq)])
    const found = await txn.getMany(this.dedupe, keys)
    const known = new Set(keys.filter((_, i) => found[i] !== undefined))
    const highest = new Map<string, number>()
    let unread = 0
    let quarantined = 0
    let lastKey = 0
    const results = calls.map(call => call.map((item): AcceptResult => {
      const e = item.envelope
      const ik = idKey(e.id)
      const sk = seqKey(e.from, e.seq)
      if (known.has(ik) || known.has(sk)) {
        return 'duplicate'
      }
      known.add(ik)
      known.add(sk)
      const q = item.quarantined === true
      lastKey = this.nextKey++
      const key = pad(lastKey)
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
        quarantined: q,
        trace: e.trace,
        hop: e.hop,
        seq: e.seq
      }
      if (e.thread !== undefined) stored.thread = e.thread
      if (e.replyTo !== undefined) stored.replyTo = e.replyTo
      if (item.topic !== undefined) stored.topic = item.topic
      txn.put(q ? this.quarantine : this.entries, key, stored)
      txn.put(this.bytesById, e.id, item.bytes)
      txn.put(this.byId, e.id, { key, q })
      if (q) {
        quarantined++
      } else {
        txn.put(this.unreadIndex, key, '')
        unread++
      }
      // keep dedupe keys at least as long as the sender may retry
      const expiry = Math.max(e.expiresAt, item.receivedAt + this.init.dedupeTtl)
      for (const k of [ik, sk]) {
        txn.put(this.dedupe, k, expiry)
        txn.put(this.dedupeExpiry, `${pad(expiry)}${SEP}${k}`, '')
      }
      highest.set(e.from, Math.max(highest.get(e.from) ?? 0, e.seq))
      return 'stored'
    }))
    if (highest.size > 0) {
      const froms = [...highest.keys()]
      const held = await txn.getMany(this.senders, froms)
      froms.forEach((from, i) => {
        const seq = highest.get(from)!
        const h = held[i]
        if (h === undefined || seq > h) txn.put(this.senders, from, seq)
      })
    }
    if (lastKey > 0) {
      txn.onCommit(() => {
        this.unreadCount += unread
        this.quarantineCount += quarantined
        this.committedKey = Math.max(this.committedKey, lastKey)
      })
    }
    return results
  }

  async read (query: InboxQuery = {}): Promise<Page<InboxEntry>> {
    this.init.guard()
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
      map: (key, s) => {
        if ((unreadOnly && s.acked) ||
          (from !== undefined && s.from !== from) ||
          (thread !== undefined && s.thread !== thread) ||
          (topic !== undefined && s.topic !== topic) ||
          (kinds !== undefined && !kinds.has(s.kind))) {
          return undefined
        }
        return toEntry(key, s)
      }
    })
  }

  async get (id: string, options: AbortOptions = {}): Promise<InboxEntry | undefined> {
    this.init.guard()
    options.signal?.throwIfAborted()
    const loc = await this.byId.get(keyPart(id, 'id'))
    if (loc === undefined) {
      return undefined
    }
    const s = await (loc.q ? this.quarantine : this.entries).get(loc.key)
    return s === undefined ? undefined : toEntry(loc.key, s)
  }

  async bytes (id: string, options: AbortOptions = {}): Promise<Uint8Array | undefined> {
    this.init.guard()
    options.signal?.throwIfAborted()
    const b = await this.bytesById.get(keyPart(id, 'id'))
    return b === undefined ? undefined : plainBytes(b)
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
        const s = loc === undefined ? undefined : await txn.get(sub, loc.key)
        if (loc === undefined || s === undefined) {
          results.push('unknown')
        } else if (s.acked) {
          results.push('already-acked')
        } else {
          txn.put(sub, loc.key, { ...s, acked: true, ackedAt: now })
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
        const s = loc === undefined ? undefined : await txn.get(loc.q ? this.quarantine : this.entries, loc.key)
        if (loc === undefined || s === undefined) {
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
        txn.put(this.entries, key, { ...s, quarantined: false })
        txn.put(this.byId, id, { key, q: false })
        if (!s.acked) {
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
    for (;;) {
      const n = await this.init.serial.run(async txn => {
        const keys = await this.dedupeExpiry.keys({ lt: bound, limit: 2000 }).all()
        for (const k of keys) {
          txn.del(this.dedupeExpiry, k)
          txn.del(this.dedupe, k.slice(k.indexOf(SEP) + 1))
        }
        return keys.length
      }, options)
      pruned += n
      if (n === 0) break
    }
    return pruned
  }
}

function idKey (id: string): string {
  return `i${SEP}${id}`
}

function seqKey (from: string, seq: number): string {
  return `s${SEP}${from}${SEP}${seq}`
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
