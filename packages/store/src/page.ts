import { MAX_SCAN } from './constants.js'
import { decodeCursor, encodeCursor, pageRange, type Sub } from './db.js'
import type { Page } from './index.js'

export interface PageQuery<V, T> {
  /** Where the values live, keyed by the primary key. */
  primary: Sub<V>
  /** Walk this index instead: its keys are `prefix + primary key`. */
  index?: Sub<string>
  /** @default '' (the whole sublevel) */
  prefix?: string
  cursor?: string
  limit: number
  reverse?: boolean
  /** Lowest primary key to include (when the cursor is not already past it). */
  start?: string
  /** Primary keys from here on are left out. */
  end?: string
  /** Turn a stored value into a result; `undefined` skips it (a filter). */
  map: (key: string, value: V) => T | undefined
  signal?: AbortSignal
}

const CHUNK = 256

/**
 * One page in key order. Skipped (filtered) entries count towards a scan bound, so a selective
 * filter over a big sublevel returns a short page with `more: true` rather than reading everything.
 * The cursor is the primary key of the last entry looked at.
 */
export async function readPage<V, T> (q: PageQuery<V, T>): Promise<Page<T>> {
  const prefix = q.prefix ?? ''
  const reverse = q.reverse ?? false
  const after = decodeCursor(q.cursor)
  const range = pageRange(prefix, after === undefined ? undefined : prefix + after, reverse)
  if (q.start !== undefined) {
    const start = prefix + q.start
    if (range.gt === undefined || range.gt < start) {
      delete range.gt
      range.gte = range.gte === undefined || range.gte < start ? start : range.gte
    }
  }
  if (q.end !== undefined) {
    const end = prefix + q.end
    if (range.lt === undefined || end < range.lt) range.lt = end
  }
  const entries: T[] = []
  let lastKey: string | undefined
  let lastIncluded: string | undefined
  let scanned = 0
  let more = false
  let chunk = Math.min(q.limit + 1, CHUNK)

  const it = q.index !== undefined ? q.index.keys(range) : q.primary.iterator(range)
  try {
    outer: for (;;) {
      q.signal?.throwIfAborted()
      let pairs: Array<[string, V | undefined]>
      if (q.index !== undefined) {
        const keys = await (it as ReturnType<Sub<string>['keys']>).nextv(chunk)
        const ids = keys.map(k => k.slice(prefix.length))
        const values = ids.length === 0 ? [] : await q.primary.getMany(ids)
        pairs = ids.map((id, i) => [id, values[i]])
      } else {
        pairs = await (it as ReturnType<Sub<V>['iterator']>).nextv(chunk)
      }
      if (pairs.length === 0) {
        break
      }
      chunk = CHUNK
      for (const [key, value] of pairs) {
        const item = value === undefined ? undefined : q.map(key, value)
        if (item !== undefined) {
          if (entries.length === q.limit) {
            more = true
            lastKey = lastIncluded
            break outer
          }
          entries.push(item)
          lastIncluded = key
        }
        lastKey = key
        if (++scanned >= MAX_SCAN) {
          // bounded work per call; with a full page, resume right after its last entry
          more = true
          if (entries.length === q.limit) lastKey = lastIncluded
          break outer
        }
      }
    }
  } finally {
    await it.close()
  }
  const page: Page<T> = { entries, more }
  if (lastKey !== undefined) {
    page.nextCursor = encodeCursor(lastKey)
  } else if (q.cursor !== undefined && q.cursor !== '') {
    page.nextCursor = q.cursor
  }
  return page
}
