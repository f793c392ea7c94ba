import { type EncodedOp, encodeDel, encodePut, readMany, type Sub } from './db.js'
import { fromLevel } from './errors.js'
import type { SyncWriter } from './writer.js'

type Slot = { value: unknown } | null

/**
 * The writes of one round, with read-your-writes: `get` sees what earlier jobs of the round (and
 * this job) put or deleted. Values handed out are shared: treat them as immutable.
 */
export class Txn {
  readonly ops: EncodedOp[] = []
  private readonly overlay = new Map<string, Slot>()
  private readonly commits: Array<() => void> = []
  /** Round-wide scratch space, shared by every job of the round (e.g. counter deltas for caps). */
  readonly scratch: Map<string, unknown>
  /**
   * Whether this job's writes must be fsynced before it resolves (the default). A job may clear it
   * for records whose loss in a machine crash is tolerated (see `WriteOptions.sync`); the round is
   * synced if any of its jobs needs it.
   */
  sync = true

  constructor (private readonly parent?: Txn) {
    this.scratch = parent?.scratch ?? new Map()
  }

  private slot (id: string): Slot | undefined {
    for (let t: Txn | undefined = this; t !== undefined; t = t.parent) {
      const s = t.overlay.get(id)
      if (s !== undefined) {
        return s
      }
    }
    return undefined
  }

  async get<V> (sub: Sub<V>, key: string): Promise<V | undefined> {
    const s = this.slot(sub.prefix + key)
    if (s !== undefined) {
      return s === null ? undefined : s.value as V
    }
    return await sub.get(key)
  }

  async getMany<V> (sub: Sub<V>, keys: string[]): Promise<Array<V | undefined>> {
    const out: Array<V | undefined> = new Array(keys.length)
    const missing: number[] = []
    keys.forEach((key, i) => {
      const s = this.slot(sub.prefix + key)
      if (s === undefined) {
        missing.push(i)
      } else {
        out[i] = s === null ? undefined : s.value as V
      }
    })
    if (missing.length > 0) {
      const found = await readMany(sub, missing.map(i => keys[i]))
      missing.forEach((i, j) => { out[i] = found[j] })
    }
    return out
  }

  /** Encoded at once: an unencodable value throws `InvalidRecordError` here, failing only its own job. */
  put<V> (sub: Sub<V>, key: string, value: V): void {
    const op = encodePut(sub, key, value)
    this.ops.push(op)
    this.overlay.set(op.key, { value })
  }

  del (sub: Sub<any>, key: string): void {
    const op = encodeDel(sub, key)
    this.ops.push(op)
    this.overlay.set(op.key, null)
  }

  /** Run `fn` after the round's batch is durable (to update in-memory counters). */
  onCommit (fn: () => void): void {
    this.commits.push(fn)
  }

  child (): Txn {
    return new Txn(this)
  }

  /** Fold a child's writes into this txn (the child's job succeeded). */
  absorb (child: Txn): void {
    for (const op of child.ops) this.ops.push(op)
    for (const [k, v] of child.overlay) this.overlay.set(k, v)
    for (const fn of child.commits) this.commits.push(fn)
  }

  committed (): void {
    for (const fn of this.commits) fn()
  }
}

interface Job {
  run: (txn: Txn) => unknown
  resolve: (value: any) => void
  reject: (err: unknown) => void
  signal?: AbortSignal
  onAbort?: () => void
}

/** Most jobs in one round. */
export const MAX_ROUND_JOBS = 512

/**
 * Read-modify-write jobs, one round at a time. A round takes every job queued so far, runs them in
 * order against one {@link Txn} (so each sees the others' writes), writes all of their ops in one
 * synced batch through the {@link SyncWriter}, then resolves them. A job that throws is left out of
 * the batch and rejected alone; if the batch fails, every job of the round is rejected and nothing
 * of the round is applied. Rounds never overlap, so check-then-write is atomic.
 */
export class Serial {
  private queue: Job[] = []
  private running: Promise<void> | undefined

  constructor (private readonly writer: SyncWriter) {}

  run<T> (fn: (txn: Txn) => T | Promise<T>, options: { signal?: AbortSignal } = {}): Promise<T> {
    const { signal } = options
    if (signal?.aborted === true) {
      return Promise.reject(signal.reason)
    }
    return new Promise<T>((resolve, reject) => {
      const job: Job = { run: fn, resolve, reject }
      if (signal !== undefined) {
        job.signal = signal
        job.onAbort = () => {
          const at = this.queue.indexOf(job)
          if (at !== -1) {
            this.queue.splice(at, 1)
            reject(signal.reason)
          }
        }
        signal.addEventListener('abort', job.onAbort, { once: true })
      }
      this.queue.push(job)
      this.running ??= Promise.resolve().then(async () => { await this.loop() })
    })
  }

  async drain (): Promise<void> {
    while (this.running !== undefined) {
      await this.running
    }
  }

  private async loop (): Promise<void> {
    try {
      while (this.queue.length > 0) {
        const jobs = this.queue.splice(0, MAX_ROUND_JOBS)
        for (const job of jobs) {
          if (job.onAbort !== undefined) job.signal?.removeEventListener('abort', job.onAbort)
        }
        await this.round(jobs)
      }
    } finally {
      this.running = undefined
    }
  }

  private async round (jobs: Job[]): Promise<void> {
    const root = new Txn()
    const done: Array<{ job: Job, result: unknown }> = []
    let sync = false
    for (const job of jobs) {
      const txn = root.child()
      try {
        const result = await job.run(txn)
        root.absorb(txn)
        done.push({ job, result })
        if (txn.sync && txn.ops.length > 0) sync = true
      } catch (err) {
        job.reject(fromLevel(err))
      }
    }
    try {
      await this.writer.write(root.ops, { sync })
    } catch (err) {
      for (const { job } of done) job.reject(err)
      return
    }
    root.committed()
    for (const { job, result } of done) job.resolve(result)
  }
}

interface Call<I, R> {
  input: I
  resolve: (value: R) => void
  reject: (err: unknown) => void
  signal?: AbortSignal
  onAbort?: () => void
}

/**
 * Merges concurrent calls of one kind into a single job per round, so the job can read what all of
 * them need in one `getMany` and write them in one batch. `runAll` gets the inputs in call order and
 * returns one result per input; an `Error` in that list rejects only its own call (and that call must
 * not have written anything). A call waiting for its round can be aborted.
 */
export class Coalescer<I, R> {
  private pending: Array<Call<I, R>> = []
  private scheduled = false

  constructor (
    private readonly serial: Serial,
    private readonly runAll: (txn: Txn, inputs: I[]) => Promise<Array<R | Error>>
  ) {}

  call (input: I, options: { signal?: AbortSignal } = {}): Promise<R> {
    const { signal } = options
    if (signal?.aborted === true) {
      return Promise.reject(signal.reason)
    }
    return new Promise<R>((resolve, reject) => {
      const call: Call<I, R> = { input, resolve, reject }
      if (signal !== undefined) {
        call.signal = signal
        call.onAbort = () => {
          const at = this.pending.indexOf(call)
          if (at !== -1) {
            this.pending.splice(at, 1)
            reject(signal.reason)
          }
        }
        signal.addEventListener('abort', call.onAbort, { once: true })
      }
      this.pending.push(call)
      if (!this.scheduled) {
        this.scheduled = true
        this.schedule()
      }
    })
  }

  private schedule (): void {
    let calls: Array<Call<I, R>> = []
    this.serial.run(async txn => {
      // take everything that arrived until the job started; later calls go to the next job
      this.scheduled = false
      calls = this.pending.splice(0)
      for (const c of calls) {
        if (c.onAbort !== undefined) c.signal?.removeEventListener('abort', c.onAbort)
      }
      return calls.length === 0 ? [] : await this.runAll(txn, calls.map(c => c.input))
    }).then(results => {
      calls.forEach((c, i) => {
        const r = results[i]
        if (r instanceof Error) c.reject(r)
        else c.resolve(r)
      })
    }, err => {
      for (const c of calls) c.reject(err)
    })
  }
}
