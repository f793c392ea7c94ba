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
  /** `'open'` once usable; before that only the async calls wait for it. */
  readonly status: string
  get (key: string): Promise<V | undefined>
  /** Blocks the event loop for the lookup: only for point reads on a hot path (mostly cache hits). */
  getSync (key: string): V | undefined
  getMany (keys: string[]): Promise<Array<V | undefined>>
  iterator (range?: Range): Iter<[string, V]>
  keys (range?: Range): Iter<string>
  values (range?: Range): Iter<V>
}

export type Db = Level<string, unknown>

/**
 * A write already encoded for the root database: the full key (sublevel prefix included) and the
 * stored form of the value. Cheaper for `level` than a sublevel operation (no per-operation
 * prefixing and encoding), and an unencodable value fails where it is built, not in a shared batch.
 */
export type EncodedOp =
  | { type: 'put', key: string, value: string | Uint8Array, valueEncoding: 'utf8' | 'view' }
  | { type: 'del', key: string }

export type Op =
  | { type: 'put', sublevel: Sub<any>, key: string, value: unknown }
  | { type: 'del', sublevel: Sub<any>, key: string }
  | EncodedOp

/**
 * LevelDB's memtable size. The default (4 MiB) fills every thousand or so delivered messages, and
 * every flush adds a level-0 table to compact; at 16 MiB a queue entry's put and its delete after
 * the ack mostly meet in memory and never reach a table. Measured on sustained delivery: about 15%
 * less CPU per message (two nodes, 40k messages). The cost: up to 32 MiB of memory while a burst is
 * written, and right after a big burst the larger compaction competes with the next messages for a
 * few seconds (see docs/benchmarks.md).
 */
const WRITE_BUFFER_SIZE = 16 * 1024 * 1024

export function openLevel (path: string): Db {
  return new Level<string, unknown>(path, { keyEncoding: 'utf8', valueEncoding: 'json', writeBufferSize: WRITE_BUFFER_SIZE })
}

type Codec = 'json' | 'utf8' | 'view'
const codecs = new WeakMap<object, Codec>()

function sub<V> (db: Db, name: string, codec: Codec): Sub<V> {
  const s = db.sublevel<string, V>(name, { keyEncoding: 'utf8', valueEncoding: codec }) as unknown as Sub<V>
  codecs.set(s, codec)
  return s
}

export function jsonSub<V> (db: Db, name: string): Sub<V> {
  return sub<V>(db, name, 'json')
}

export function bytesSub (db: Db, name: string): Sub<Uint8Array> {
  return sub<Uint8Array>(db, name, 'view')
}

/** An index sublevel: the key is everything, the value is empty. */
export function indexSub (db: Db, name: string): Sub<string> {
  return sub<string>(db, name, 'utf8')
}

/** Encode a put into `sub` the way the sublevel itself would store it. Throws `InvalidRecordError` on an unencodable value. */
export function encodePut (s: Sub<any>, key: string, value: unknown): EncodedOp {
  const codec = codecs.get(s) ?? 'json'
  if (codec === 'view') {
    if (!(value instanceof Uint8Array)) throw new InvalidRecordError('binary value must be a Uint8Array')
    return { type: 'put', key: s.prefix + key, value, valueEncoding: 'view' }
  }
  if (codec === 'utf8') {
    return { type: 'put', key: s.prefix + key, value: String(value), valueEncoding: 'utf8' }
  }
  let json: string | undefined
  try {
    json = JSON.stringify(value)
  } catch (err) {
    throw new InvalidRecordError(`cannot store value: ${(err as Error).message}`, { cause: err })
  }
  if (json === undefined) throw new InvalidRecordError('cannot store value: not JSON')
  return { type: 'put', key: s.prefix + key, value: json, valueEncoding: 'utf8' }
}

export function encodeDel (s: Sub<any>, key: string): EncodedOp {
  return { type: 'del', key: s.prefix + key }
}

interface Implementation {
  status: string
  /** abstract-level's implementer API: operations with keys and values already encoded. */
  _batch?: (operations: EncodedOp[], options: { sync: boolean }) => Promise<void>
  /** …and a chained batch of the implementation itself (`classic-level`'s, which takes key and value as arguments). */
  _chainedBatch?: () => ChainedImplementation
  detachResource?: (resource: unknown) => void
}

interface ChainedImplementation {
  _put: (key: string, value: string | Uint8Array) => void
  _del: (key: string) => void
  _write: (options: { sync: boolean }) => Promise<void>
}

/**
 * Write `ops` in one atomic batch. When every operation is already encoded (see {@link EncodedOp})
 * they go straight to the implementation: abstract-level's public `batch()` would only copy,
 * re-validate and re-prefix each one, which cost more than the write itself (≈ 6 µs per
 * operation). `classic-level`'s chained batch, fed directly, is cheaper still than its array form,
 * which reads every operation's fields by name through N-API: about half the main-thread time per
 * operation, and 6 % more delivery throughput (paired runs). The batch registers itself with the
 * database (which closes open batches on close); once written it is detached, as `write()` does.
 * The bytes written are the same either way; anything else (a sublevel operation, a database not
 * open) takes the public path, with its checks and errors.
 */
export async function batch (db: Db, ops: Op[], sync: boolean): Promise<void> {
  const impl = db as unknown as Implementation
  if (impl.status === 'open' && allEncoded(ops)) {
    if (typeof impl._chainedBatch === 'function' && typeof impl.detachResource === 'function') {
      const chained = impl._chainedBatch()
      try {
        for (let i = 0; i < ops.length; i++) {
          const op = ops[i]!
          if (op.type === 'put') chained._put(op.key, op.value)
          else chained._del(op.key)
        }
        await chained._write({ sync })
      } finally {
        impl.detachResource(chained)
      }
      return
    }
    if (typeof impl._batch === 'function') {
      await impl._batch(ops, { sync })
      return
    }
  }
  await db.batch(ops as any, { sync })
}

function allEncoded (ops: Op[]): ops is EncodedOp[] {
  for (let i = 0; i < ops.length; i++) {
    if ((ops[i] as { sublevel?: unknown }).sublevel !== undefined) return false
  }
  return true
}

/** Most keys read on the event loop at once (bounds how long one batch of reads can block it). */
const MAX_SYNC_READS = 512
/** A batch of event-loop reads slower than this went to the disk, not the caches… */
const SLOW_SYNC_READS_MS = 4
/** …and then reads go through the thread pool for this long. */
const POOL_READS_FOR_MS = 1000
let poolReadsUntil = 0

/**
 * The point reads of a read-modify-write round, on the event loop (`getSync`) while that is cheap.
 * The keys a round reads are nearly always in the memtable or the block cache (records written a
 * moment ago), or beyond every table's key range (ids newer than anything stored): 1–3 µs a key.
 * Through the thread pool the same batch queues behind fsyncs and, on a receiver, signature
 * checks: 5–7 ms per delivery round, 3 % of delivery throughput (paired runs). A batch that took
 * longer than {@link SLOW_SYNC_READS_MS} must have read from disk: reads then use the pool for a while.
 */
export async function readMany<V> (sub: Sub<V>, keys: string[]): Promise<Array<V | undefined>> {
  if (keys.length > MAX_SYNC_READS || sub.status !== 'open' || performance.now() < poolReadsUntil) return await sub.getMany(keys)
  const started = performance.now()
  const out = new Array<V | undefined>(keys.length)
  for (let i = 0; i < keys.length; i++) out[i] = sub.getSync(keys[i]!)
  const ended = performance.now()
  if (ended - started > SLOW_SYNC_READS_MS) poolReadsUntil = ended + POOL_READS_FOR_MS
  return out
}

/**
 * Binary records: a JSON header and a blob (an envelope as received) in one value, so one record
 * is one LevelDB operation. Layout: `0x01`, header length (u32 BE), header (UTF-8 JSON), blob.
 */
const RECORD_V1 = 0x01

export function encodeRecord (header: unknown, blob: Uint8Array): Uint8Array {
  let json: string
  try {
    json = JSON.stringify(header)
  } catch (err) {
    throw new InvalidRecordError(`cannot store value: ${(err as Error).message}`, { cause: err })
  }
  const headerLength = Buffer.byteLength(json)
  const out = Buffer.allocUnsafe(5 + headerLength + blob.byteLength)
  out[0] = RECORD_V1
  out.writeUInt32BE(headerLength, 1)
  out.write(json, 5, 'utf8')
  out.set(blob, 5 + headerLength)
  return out
}

/** `undefined` if `value` is not a binary record (a JSON value of an older layout starts with `{`). */
export function decodeRecord<H> (value: Uint8Array): { header: H, blob: Uint8Array } | undefined {
  if (value.byteLength < 5 || value[0] !== RECORD_V1) return undefined
  const b = Buffer.isBuffer(value) ? value : Buffer.from(value.buffer, value.byteOffset, value.byteLength)
  const headerLength = b.readUInt32BE(1)
  const end = 5 + headerLength
  if (end > b.byteLength) throw new InvalidRecordError('corrupt record: header runs past the value')
  const header = JSON.parse(b.toString('utf8', 5, end)) as H
  return { header, blob: new Uint8Array(b.buffer, b.byteOffset + end, b.byteLength - end) }
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
