import { Level } from 'level'
import { InvalidRecordError } from './errors.js'

/** Key-range options of a LevelDB iterator. */
export interface Range {
  gt?: string
  gte?: string
  lt?: string
  lte?: string
  limit?: number
  reverse?: boolean
}

export interface Iter<T> extends AsyncIterableIterator<T> {
  nextv (size: number): Promise<T[]>
  all (): Promise<T[]>
  close (): Promise<void>
}

/**
 * The slice of an abstract-level sublevel the store uses. `level`'s own typings claim `get`
 * never yields `undefined`; at runtime a missing key gives `undefined`, and so do these.
 */
export interface Sub<V> {
  readonly prefix: string
  get (key: string): Promise<V | undefined>
  getMany (keys: string[]): Promise<Array<V | undefined>>
  iterator (range?: Range): Iter<[string, V]>
  keys (range?: Range): Iter<string>
  values (range?: Range): Iter<V>
}

export type Db = Level<string, unknown>

export type Op =
  | { type: 'put', sublevel: Sub<any>, key: string, value: unknown }
  | { type: 'del', sublevel: Sub<any>, key: string }

export function openLevel (path: string): Db {
  return new Level<string, unknown>(path, { keyEncoding: 'utf8', valueEncoding: 'json' })
}

export function jsonSub<V> (db: Db, name: string): Sub<V> {
  return db.sublevel<string, V>(name, { keyEncoding: 'utf8', valueEncoding: 'json' }) as unknown as Sub<V>
}

export function bytesSub (db: Db, name: string): Sub<Uint8Array> {
  return db.sublevel<string, Uint8Array>(name, { keyEncoding: 'utf8', valueEncoding: 'view' }) as unknown as Sub<Uint8Array>
}

/** An index sublevel: the key is everything, the value is empty. */
export function indexSub (db: Db, name: string): Sub<string> {
  return db.sublevel<string, string>(name, { keyEncoding: 'utf8', valueEncoding: 'utf8' }) as unknown as Sub<string>
}

export async function batch (db: Db, ops: Op[], sync: boolean): Promise<void> {
  await db.batch(ops as any, { sync })
}

/** Separates the parts of a composite key. Nothing stored in a key part may contain it. */
export const SEP = '\x00'
const AFTER_SEP = '\x01'

/** Every key that starts with `prefix` (which ends in {@link SEP}). */
export function under (prefix: string): { gte: string, lt: string } {
  return { gte: prefix, lt: prefix.slice(0, -1) + AFTER_SEP }
}

/**
 * Keys under `prefix` (`''`: the whole sublevel) strictly after `from` (before it when `reverse`),
 * where `from` is a full key.
 */
export function pageRange (prefix: string, from: string | undefined, reverse: boolean): Range {
  const range: Range = prefix === '' ? { reverse } : { ...under(prefix), reverse }
  if (from !== undefined) {
    if (reverse) {
      range.lt = from
    } else {
      delete range.gte
      range.gt = from
    }
  }
  return range
}

/** `level` hands back Buffers for binary values; callers get a plain Uint8Array view of the same memory. */
export function plainBytes (b: Uint8Array): Uint8Array {
  return b.constructor === Uint8Array ? b : new Uint8Array(b.buffer, b.byteOffset, b.byteLength)
}

const WIDTH = 16

/** A non-negative integer as a fixed-width decimal string, so keys sort numerically. */
export function pad (n: number): string {
  return String(Math.max(0, Math.floor(n))).padStart(WIDTH, '0')
}

const MAX_KEY_PART = 1024

/** Check that a string can be part of a composite key. */
export function keyPart (value: unknown, what: string): string {
  if (typeof value !== 'string' || value.length === 0 || value.length > MAX_KEY_PART || value.includes(SEP)) {
    throw new InvalidRecordError(`${what} must be a non-empty string of at most ${MAX_KEY_PART} characters without NUL bytes`)
  }
  return value
}

export function timestamp (value: unknown, what: string): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) {
    throw new InvalidRecordError(`${what} must be a non-negative integer (ms since the epoch)`)
  }
  return value
}

/** Opaque cursors: base64url of the key they stand for. */
export function encodeCursor (key: string): string {
  return Buffer.from(key, 'utf8').toString('base64url')
}

export function decodeCursor (cursor: string | undefined): string | undefined {
  if (cursor === undefined || cursor === '') {
    return undefined
  }
  if (typeof cursor !== 'string' || !/^[A-Za-z0-9_-]+$/.test(cursor)) {
    throw new InvalidRecordError('invalid cursor')
  }
  return Buffer.from(cursor, 'base64url').toString('utf8')
}

export function clampLimit (limit: number | undefined, fallback: number, max: number): number {
  if (limit === undefined) {
    return fallback
  }
  if (!Number.isInteger(limit) || limit < 1) {
    throw new InvalidRecordError('limit must be a positive integer')
  }
  return Math.min(limit, max)
}
