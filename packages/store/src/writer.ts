import { batch, type Db, type Op } from './db.js'
import { StorageFullError, writeError } from './errors.js'

interface Request {
  ops: Op[]
  sync: boolean
  resolve: () => void
  reject: (err: unknown) => void
  signal?: AbortSignal
  onAbort?: () => void
}

/** Counters of a {@link SyncWriter}: how many synced batches carried how many writes. */
export interface SyncWriterStats {
  /** `db.batch` calls made. */
  batches: number
  /** Of those, the fsynced ones. */
  synced: number
  /** `write()` calls served. */
  writes: number
  /** Operations written. */
  ops: number
}

/** Most operations in one synced batch; a single larger write still goes in alone. */
export const DEFAULT_MAX_BATCH_OPS = 20_000

/** How a write must be on disk when its promise resolves. */
export interface WriteOptions {
  signal?: AbortSignal
  /**
   * `true` (default): fsynced, survives a crash of the machine. `false`: handed to the OS, survives
   * a crash of the process (kill -9) but not of the machine; for records whose loss the protocol
   * tolerates (best-effort broadcasts), so they do not wait for an fsync.
   */
  sync?: boolean
}

/**
 * Group commit. Every `write(ops)` is durable (`sync: true`) when its promise resolves, unless it
 * asked for `sync: false`. Writes requested while a batch is in flight are coalesced into the next
 * batch, so N concurrent callers pay for about two fsyncs, not N; a batch is synced if any of its
 * writes asked for it. Each caller's ops stay atomic: they go into one batch together.
 */
export class SyncWriter {
  readonly stats: SyncWriterStats = { batches: 0, synced: 0, writes: 0, ops: 0 }
  private queue: Request[] = []
  private running: Promise<void> | undefined

  constructor (private readonly db: Db, private readonly maxBatchOps = DEFAULT_MAX_BATCH_OPS) {}

  /** Write `ops` atomically and durably. Rejects with `StorageFullError`/`StorageError` if the batch fails. */
  write (ops: Op[], options: WriteOptions = {}): Promise<void> {
    const { signal } = options
    if (signal?.aborted === true) {
      return Promise.reject(signal.reason)
    }
    if (ops.length === 0) {
      return Promise.resolve()
    }
    return new Promise<void>((resolve, reject) => {
      const request: Request = { ops, sync: options.sync !== false, resolve, reject }
      if (signal !== undefined) {
        // only while queued: once a batch has it, the write goes through
        request.signal = signal
        request.onAbort = () => {
          const at = this.queue.indexOf(request)
          if (at !== -1) {
            this.queue.splice(at, 1)
            reject(signal.reason)
          }
        }
        signal.addEventListener('abort', request.onAbort, { once: true })
      }
      this.queue.push(request)
      // start on a microtask so writes issued in the same tick share the first batch
      this.running ??= Promise.resolve().then(async () => { await this.run() })
    })
  }

  /** Resolves once everything queued so far is written (or failed). */
  async drain (): Promise<void> {
    while (this.running !== undefined) {
      await this.running
    }
  }

  private async run (): Promise<void> {
    try {
      while (this.queue.length > 0) {
        const taken = this.take()
        await this.commit(taken)
      }
    } finally {
      this.running = undefined
    }
  }

  private take (): Request[] {
    let count = 0
    let n = 0
    while (n < this.queue.length && (n === 0 || count + this.queue[n].ops.length <= this.maxBatchOps)) {
      count += this.queue[n].ops.length
      n++
    }
    const taken = this.queue.splice(0, n)
    for (const request of taken) {
      if (request.onAbort !== undefined) {
        request.signal?.removeEventListener('abort', request.onAbort)
      }
    }
    return taken
  }

  private async commit (requests: Request[]): Promise<void> {
    const ops = requests.length === 1 ? requests[0].ops : requests.flatMap(r => r.ops)
    const sync = requests.some(r => r.sync)
    try {
      await batch(this.db, ops, sync)
      this.count(requests.length, ops.length, sync)
      for (const r of requests) r.resolve()
    } catch (cause) {
      const err = writeError(cause)
      if (requests.length === 1 || err instanceof StorageFullError) {
        for (const r of requests) r.reject(err)
        return
      }
      // one caller's bad op must not fail the others: retry them one by one
      for (const r of requests) {
        try {
          await batch(this.db, r.ops, r.sync)
          this.count(1, r.ops.length, r.sync)
          r.resolve()
        } catch (e) {
          r.reject(writeError(e))
        }
      }
    }
  }

  private count (writes: number, ops: number, synced: boolean): void {
    this.stats.batches++
    if (synced) this.stats.synced++
    this.stats.writes += writes
    this.stats.ops += ops
  }
}
