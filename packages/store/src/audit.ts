import { newId, traceId } from '@persona-mesh/protocol'
import { DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, MAX_SCAN } from './constants.js'
import { batch, clampLimit, type Db, decodeCursor, type EncodedOp, encodeCursor, encodePut, indexSub, type Iter, jsonSub, keyPart, type Op, pad, type Range, SEP, type Sub, timestamp, under } from './db.js'
import { InvalidRecordError, writeError } from './errors.js'
import type { AbortOptions, AuditEvent, AuditLog, AuditQuery, Page } from './index.js'
import type { SyncWriter } from './writer.js'

const TRACEPARENT = /^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$/
const TRACE_ID = /^[0-9a-f]{32}$/

export interface AuditLogInit {
  db: Db
  /** Events ride along with the store's next batch (unsynced: an audit trail tolerates losing its last events in a machine crash). */
  writer: SyncWriter
  guard: () => void
}

/** A traceparent or a bare trace id → the trace id every span of the trace shares. */
function traceKey (trace: string): string {
  if (TRACEPARENT.test(trace)) return traceId(trace)
  if (TRACE_ID.test(trace)) return trace
  return keyPart(trace, 'trace')
}

/** Most events in one stored block. */
const MAX_BLOCK = 256
/** Blocks read per step of a query. */
const CHUNK = 64

/** A stored block: the events of one write that share a time (a single event in the first layout). */
type Block = AuditEvent[] | AuditEvent

function eventsOf (block: Block): AuditEvent[] {
  return Array.isArray(block) ? block : [block]
}

/** The index keys of a block: one per distinct trace id, peer and id among its events. */
function blockIndexKeys (key: string, events: AuditEvent[]): string[] {
  const keys = new Set<string>()
  for (const e of events) {
    if (e.trace !== undefined) keys.add(`t${SEP}${traceKey(e.trace)}${SEP}${key}`)
    if (e.peer !== undefined) keys.add(`p${SEP}${e.peer}${SEP}${key}`)
    if (e.id !== undefined) keys.add(`i${SEP}${e.id}${SEP}${key}`)
  }
  return [...keys]
}

/**
 * Append-only, in time order; indexed by trace id, peer and message/task id. Events written
 * together that share a time are stored as one block (`${pad(at)}\0${ulid}` → events), indexed
 * once per distinct trace, peer and id in it: a burst of deliveries to one peer costs one peer
 * index entry, not one per message, and one record instead of hundreds. Blocks of the first
 * layout (one event each) read the same way.
 */
export class LevelAuditLog implements AuditLog {
  private readonly blocks: Sub<Block>
  private readonly index: Sub<string>

  constructor (private readonly init: AuditLogInit) {
    this.blocks = jsonSub(init.db, 'au')
    this.index = indexSub(init.db, 'aui')
  }

  /**
   * Events appended in the same turn of the event loop go into one (unsynced) batch: callers log
   * one event at a time, often several per delivered message.
   */
  async append (events: AuditEvent[], options: AbortOptions = {}): Promise<void> {
    this.init.guard()
    options.signal?.throwIfAborted()
    for (const e of events) validateEvent(e)
    if (events.length === 0) return
    await new Promise<void>((resolve, reject) => {
      for (const e of events) this.queued.push(e)
      this.waiters.push({ resolve, reject })
      this.schedule()
    })
  }

  record (event: AuditEvent): void {
    this.init.guard()
    validateEvent(event)
    this.queued.push(event)
    this.schedule()
  }

  private queued: AuditEvent[] = []
  private waiters: Array<{ resolve: () => void, reject: (err: Error) => void }> = []
  private running: Promise<void> | undefined

  /** Write what is queued on the next turn of the event loop (one batch for everything logged until then). */
  private schedule (): void {
    this.running ??= new Promise<void>(resolve => { setImmediate(resolve) }).then(async () => { await this.write() })
  }

  private async write (): Promise<void> {
    try {
      while (this.queued.length > 0) {
        const events = this.queued
        const waiters = this.waiters
        this.queued = []
        this.waiters = []
        try {
          await this.init.writer.write(this.encode(events), { sync: false })
          for (const w of waiters) w.resolve()
        } catch (err) {
          for (const w of waiters) w.reject(err as Error)
        }
      }
    } finally {
      this.running = undefined
    }
  }

  /** Events (in append order) → blocks of events with the same time, and their index entries. */
  private encode (events: AuditEvent[]): EncodedOp[] {
    const byTime = new Map<number, AuditEvent[][]>()
    for (const e of events) {
      let blocks = byTime.get(e.at)
      if (blocks === undefined) {
        blocks = [[]]
        byTime.set(e.at, blocks)
      }
      let last = blocks[blocks.length - 1]!
      if (last.length === MAX_BLOCK) {
        last = []
        blocks.push(last)
      }
      last.push(e)
    }
    const ops: EncodedOp[] = []
    for (const [at, blocks] of byTime) {
      for (const block of blocks) {
        const key = `${pad(at)}${SEP}${newId()}`
        ops.push(encodePut(this.blocks, key, block))
        for (const k of blockIndexKeys(key, block)) ops.push(encodePut(this.index, k, ''))
      }
    }
    return ops
  }

  /** Resolves once every appended event is written. */
  async drain (): Promise<void> {
    while (this.running !== undefined) await this.running
  }

  /**
   * One page in time order. The cursor names the block and the position in it of the last event
   * returned (or looked at: a selective query over many events returns a short page with
   * `more: true` after `MAX_SCAN` events rather than reading everything).
   */
  async query (query: AuditQuery = {}): Promise<Page<AuditEvent>> {
    this.init.guard()
    const { trace, peer, id } = query
    const limit = clampLimit(query.limit, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
    const tk = trace === undefined ? undefined : traceKey(trace)
    let prefix = ''
    if (tk !== undefined) prefix = `t${SEP}${tk}${SEP}`
    else if (id !== undefined) prefix = `i${SEP}${keyPart(id, 'id')}${SEP}`
    else if (peer !== undefined) prefix = `p${SEP}${keyPart(peer, 'peer')}${SEP}`
    const matches = (e: AuditEvent): boolean =>
      (tk === undefined || (e.trace !== undefined && traceKey(e.trace) === tk)) &&
      (peer === undefined || e.peer === peer) &&
      (id === undefined || e.id === id)

    const after = parseCursor(query.cursor)
    const range: Range = prefix === '' ? {} : under(prefix)
    if (after !== undefined) {
      // the cursor's block again, from the event after the last one returned
      delete range.gt
      range.gte = prefix + after.key
    }
    if (query.since !== undefined) {
      const start = prefix + pad(timestamp(query.since, 'since'))
      if (range.gte === undefined || range.gte < start) range.gte = start
    }
    if (query.until !== undefined) {
      const end = prefix + pad(timestamp(query.until, 'until'))
      if (range.lt === undefined || end < range.lt) range.lt = end
    }

    const entries: AuditEvent[] = []
    let cursor: Position | undefined
    let scanned = 0
    let more = false
    const it = prefix === '' ? this.blocks.iterator(range) : this.index.keys(range)
    try {
      outer: for (;;) {
        query.signal?.throwIfAborted()
        let blocks: Array<[string, Block | undefined]>
        if (prefix === '') {
          blocks = await (it as Iter<[string, Block]>).nextv(CHUNK)
        } else {
          const keys = (await (it as Iter<string>).nextv(CHUNK)).map(k => k.slice(prefix.length))
          const values = keys.length === 0 ? [] : await this.blocks.getMany(keys)
          blocks = keys.map((k, i) => [k, values[i]])
        }
        if (blocks.length === 0) break
        for (const [key, block] of blocks) {
          if (block === undefined) continue
          const events = eventsOf(block)
          const from = after !== undefined && key === after.key ? after.index + 1 : 0
          for (let i = from; i < events.length; i++) {
            const e = events[i]!
            if (matches(e)) {
              if (entries.length === limit) {
                more = true
                break outer
              }
              entries.push(e)
            }
            cursor = { key, index: i }
            if (++scanned >= MAX_SCAN) {
              more = true
              break outer
            }
          }
        }
      }
    } finally {
      await it.close()
    }
    const page: Page<AuditEvent> = { entries, more }
    if (cursor !== undefined) page.nextCursor = encodeCursor(`${cursor.key}${SEP}${cursor.index}`)
    else if (query.cursor !== undefined && query.cursor !== '') page.nextCursor = query.cursor
    return page
  }

  async prune (before: number, options: AbortOptions = {}): Promise<number> {
    this.init.guard()
    const bound = pad(timestamp(before, 'before'))
    let pruned = 0
    for (;;) {
      options.signal?.throwIfAborted()
      const chunk = await this.blocks.iterator({ lt: bound, limit: 1000 }).all()
      if (chunk.length === 0) break
      const ops: Op[] = []
      for (const [key, block] of chunk) {
        const events = eventsOf(block)
        ops.push({ type: 'del', sublevel: this.blocks, key })
        for (const k of blockIndexKeys(key, events)) ops.push({ type: 'del', sublevel: this.index, key: k })
        pruned += events.length
      }
      try {
        await batch(this.init.db, ops, false)
      } catch (err) {
        throw writeError(err)
      }
    }
    return pruned
  }
}

/** Where a page stopped: a block and the index of the last event looked at in it. */
interface Position {
  key: string
  index: number
}

function parseCursor (cursor: string | undefined): Position | undefined {
  const text = decodeCursor(cursor)
  if (text === undefined) return undefined
  const at = text.lastIndexOf(SEP)
  const index = Number(text.slice(at + 1))
  // a cursor of the first layout names the last event's own record: resume after all of it
  if (at <= 0 || !Number.isSafeInteger(index) || index < 0 || text.indexOf(SEP) === at) return { key: text, index: Number.MAX_SAFE_INTEGER }
  return { key: text.slice(0, at), index }
}

function validateEvent (e: AuditEvent): void {
  if (typeof e !== 'object' || e === null) throw new InvalidRecordError('audit event must be an object')
  timestamp(e.at, 'audit at')
  if (typeof e.kind !== 'string' || e.kind === '') throw new InvalidRecordError('audit kind must be a non-empty string')
  if (typeof e.outcome !== 'string') throw new InvalidRecordError('audit outcome must be a string')
  if (e.trace !== undefined) traceKey(e.trace)
  if (e.peer !== undefined) keyPart(e.peer, 'peer')
  if (e.id !== undefined) keyPart(e.id, 'id')
}
