import { hostname } from 'node:os'
import { MeshError } from '@persona-mesh/protocol'

/** Who holds a data directory, as recorded in its `owner.json`. */
export interface OwnerInfo {
  pid: number
  /** Persona name, if the owner gave one. */
  name?: string
  hostname: string
  /** ISO 8601 time the owner opened the store. */
  startedAt: string
}

/** The data directory is open in another process (or already open in this one). */
export class StoreLockedError extends MeshError {
  override name = 'StoreLockedError'
  constructor (readonly path: string, readonly owner?: OwnerInfo, options?: ErrorOptions) {
    super(describeLock(path, owner), options)
  }
}

function describeLock (path: string, owner?: OwnerInfo): string {
  if (owner === undefined) {
    return `data directory ${path} is in use by another process`
  }
  const who = owner.name === undefined ? 'another process' : `persona ${owner.name}`
  const self = owner.pid === process.pid ? ', this process' : ''
  const host = owner.hostname === '' || owner.hostname === hostname() ? '' : ` on host ${owner.hostname}`
  return `data directory ${path} is in use by ${who} (pid ${owner.pid}${self}${host}, since ${owner.startedAt})`
}

/** An outbox cap would be exceeded; nothing of the call was written. */
export class QueueFullError extends MeshError {
  override name = 'QueueFullError'
  constructor (
    /** `peer`: the recipient's queue is full; `total`: the whole outbox is full. */
    readonly scope: 'peer' | 'total',
    readonly limit: number,
    readonly to?: string
  ) {
    super(scope === 'peer'
      ? `outbox for ${to} is full (limit ${limit} entries)`
      : `outbox is full (limit ${limit} entries)`)
  }
}

/** A storage failure below the store: an I/O error, corruption. The original error is the `cause`. */
export class StorageError extends MeshError {
  override name = 'StorageError'
}

/** The disk is full (ENOSPC). Nothing of the failed write was stored; reads keep working. */
export class StorageFullError extends StorageError {
  override name = 'StorageFullError'
}

/** The store was closed, or is closing. */
export class StoreClosedError extends MeshError {
  override name = 'StoreClosedError'
  constructor () {
    super('store is closed')
  }
}

/** A record handed to the store is unusable: a missing id, a bad priority, a key with a NUL byte. */
export class InvalidRecordError extends MeshError {
  override name = 'InvalidRecordError'
}

const NO_SPACE = /no space left on device|ENOSPC/i

/**
 * Map whatever `level` (or the file system) threw to one of ours. Our own errors and aborts pass through.
 */
export function toStoreError (err: unknown): Error {
  if (err instanceof MeshError) {
    return err
  }
  if (err instanceof Error && err.name === 'AbortError') {
    return err
  }
  for (let e: unknown = err, depth = 0; e != null && depth < 8; e = (e as { cause?: unknown }).cause, depth++) {
    const code = (e as { code?: unknown }).code
    const message = (e as { message?: unknown }).message
    if (code === 'ENOSPC' || (typeof message === 'string' && NO_SPACE.test(message))) {
      return new StorageFullError(`disk full: ${typeof message === 'string' ? message : 'ENOSPC'}`, { cause: err })
    }
  }
  const message = err instanceof Error ? err.message : String(err)
  return new StorageError(`storage failure: ${message}`, { cause: err })
}

/** True if `level` refused to open because another handle holds the LOCK file. */
export function isLockedError (err: unknown): boolean {
  for (let e: unknown = err, depth = 0; e != null && depth < 8; e = (e as { cause?: unknown }).cause, depth++) {
    if ((e as { code?: unknown }).code === 'LEVEL_LOCKED') {
      return true
    }
  }
  return false
}

/** Like {@link toStoreError}, but only for errors that came out of `level`; anything else passes through. */
export function fromLevel (err: unknown): unknown {
  const code = (err as { code?: unknown } | null)?.code
  if (typeof code === 'string' && (code.startsWith('LEVEL_') || code === 'ENOSPC')) {
    return toStoreError(err)
  }
  return err
}

/** Storage failures become StorageError/StorageFullError; anything else was a value that cannot be encoded. */
export function writeError (err: unknown): Error {
  const mapped = fromLevel(err)
  if (mapped instanceof MeshError) {
    return mapped
  }
  const message = err instanceof Error ? err.message : String(err)
  return new InvalidRecordError(`cannot store value: ${message}`, { cause: err })
}
