import { newId, traceId } from '@persona-mesh/protocol'
import { DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE } from './constants.js'
import { batch, clampLimit, type Db, type EncodedOp, encodePut, indexSub, jsonSub, keyPart, type Op, pad, SEP, type Sub, timestamp } from './db.js'
import { InvalidRecordError, writeError } from './errors.js'
import type { AbortOptions, AuditEvent, AuditLog, AuditQuery, Page } from './index.js'
import { readPage } from './page.js'

const TRACEPARENT = /^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$/
const TRACE_ID = /^[0-9a-f]{32}$/

export interface AuditLogInit {
  db: Db
  guard: () => void
}

/** A traceparent or a bare trace id → the trace id every span of the trace shares. */
function traceKey (trace: string): string {
  if (TRACEPARENT.test(trace)) return traceId(trace)
  if (TRACE_ID.test(trace)) return trace
  return keyPart(trace, 'trace')
}

function indexKeys (key: string, e: AuditEvent): string[] {
  const keys: string[] = []
  if (e.trace !== undefined) keys.push(`t${SEP}${traceKey(e.trace)}${SEP}${key}`)
  if (e.peer !== undefined) keys.push(`p${SEP}${e.peer}${SEP}${key}`)
  if (e.id !== undefined) keys.push(`i${SEP}${e.id}${SEP}${key}`)
  return keys
}

/** Append-only, keyed by time; indexed by trace id, peer and message/task id. */
export class LevelAuditLog implements AuditLog {
  /** `${pad(at)}\0${ulid}` → event. */
  private readonly events: Sub<AuditEvent>
  private readonly index: Sub<string>

  constructor (private readonly init: AuditLogInit) {
    this.events = jsonSub(init.db, 'au')
    this.index = indexSub(init.db, 'aui')
  }

  /**
   * Events appended in the same turn of the event loop go into one (unsynced) batch: callers log
   * one event at a time, often several per delivered message.
   */
  async append (events: AuditEvent[], options: AbortOptions = {}): Promise<void> {
    this.init.guard()
    options.signal?.throwIfAborted()
    const ops: EncodedOp[] = []
    for (const e of events) {
      validateEvent(e)
      const key = `${pad(e.at)}${SEP}${newId()}`
      ops.push(encodePut(this.events, key, e))
      for (const k of indexKeys(key, e)) ops.push(encodePut(this.index, k, ''))
    }
    if (ops.length === 0) return
    await new Promise<void>((resolve, reject) => {
      for (const op of ops) this.queued.push(op)
      this.waiters.push({ resolve, reject })
      this.running ??= new Promise<void>(resolve => { setImmediate(resolve) }).then(async () => { await this.write() })
    })
  }

  private queued: EncodedOp[] = []
  private waiters: Array<{ resolve: () => void, reject: (err: Error) => void }> = []
  private running: Promise<void> | undefined

  private async write (): Promise<void> {
    try {
      while (this.queued.length > 0) {
        const ops = this.queued
        const waiters = this.waiters
        this.queued = []
        this.waiters = []
        try {
          await batch(this.init.db, ops, false)
          for (const w of waiters) w.resolve()
        } catch (err) {
          const e = writeError(err)
          for (const w of waiters) w.reject(e)
        }
      }
    } finally {
      this.running = undefined
    }
  }

  /** Resolves once every appended event is written. */
  async drain (): Promise<void> {
    while (this.running !== undefined) await this.running
  }

  async query (query: AuditQuery = {}): Promise<Page<AuditEvent>> {
    this.init.guard()
    const { trace, peer, id } = query
    let prefix: string | undefined
    if (trace !== undefined) prefix = `t${SEP}${traceKey(trace)}${SEP}`
    else if (id !== undefined) prefix = `i${SEP}${keyPart(id, 'id')}${SEP}`
    else if (peer !== undefined) prefix = `p${SEP}${keyPart(peer, 'peer')}${SEP}`
    return await readPage({
      primary: this.events,
      ...(prefix === undefined ? {} : { index: this.index, prefix }),
      cursor: query.cursor,
      limit: clampLimit(query.limit, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE),
      ...(query.since === undefined ? {} : { start: pad(timestamp(query.since, 'since')) }),
      ...(query.until === undefined ? {} : { end: pad(timestamp(query.until, 'until')) }),
      signal: query.signal,
      map: (_key, e) => (peer === undefined || e.peer === peer) && (id === undefined || e.id === id) ? e : undefined
    })
  }

  async prune (before: number, options: AbortOptions = {}): Promise<number> {
    this.init.guard()
    const bound = pad(timestamp(before, 'before'))
    let pruned = 0
    for (;;) {
      options.signal?.throwIfAborted()
      const chunk = await this.events.iterator({ lt: bound, limit: 1000 }).all()
      if (chunk.length === 0) break
      const ops: Op[] = []
      for (const [key, e] of chunk) {
        ops.push({ type: 'del', sublevel: this.events, key })
        for (const k of indexKeys(key, e)) ops.push({ type: 'del', sublevel: this.index, key: k })
      }
      try {
        await batch(this.init.db, ops, false)
      } catch (err) {
        throw writeError(err)
      }
      pruned += chunk.length
    }
    return pruned
  }
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
