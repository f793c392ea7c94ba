import { Worker } from 'node:worker_threads'
import { logger } from '@libp2p/logger'

const log = logger('persona-mesh:burst')

/** Items asked for in one turn of the event loop from which on they go to the worker. */
export const WORKER_BATCH = 16

export interface BurstWorkerInit<I, O> {
  /** For logs: what the worker does ("verifying"). */
  name: string
  /**
   * CommonJS run in the worker (`require`, `workerData` in scope) that defines `function work (item)`,
   * the same function as {@link inline}. A batch of items goes in; their results come out, in order.
   */
  source: string
  workerData: unknown
  /** The work done on this thread: small batches, the first burst while the worker boots, and all of it once the worker failed. */
  inline: (item: I) => O
}

/** Where the work was done, in items. */
export interface BurstStats {
  inWorker: number
  here: number
}

interface Request<I, O> {
  item: I
  resolve: (result: O) => void
  reject: (err: Error) => void
}

const LOOP = `
parentPort.on('message', ({ id, items }) => {
  let results
  try {
    results = items.map(work)
  } catch (err) {
    parentPort.postMessage({ id, error: String((err && err.message) || err) })
    return
  }
  parentPort.postMessage({ id, results })
})
`

/**
 * CPU-bound work that comes in bursts (verifying a window of receipts sealed one by one),
 * moved off the event loop in batches: everything asked for in one turn of the event loop, once it
 * is at least {@link WORKER_BATCH} items, goes to one worker thread in one message. Fewer are done
 * here, so a single item never waits for a hop to the worker, unless the worker still has earlier
 * ones: results are handed out in the order they were asked for. The worker starts with the first
 * burst (which is done here while it boots); if it fails, its work is done here and so is
 * everything after. One worker, not a pool: on a machine with few cores, more threads only
 * compete with the event loops for them.
 */
export class BurstWorker<I, O> {
  readonly stats: BurstStats = { inWorker: 0, here: 0 }
  private queue: Array<Request<I, O>> = []
  private worker: Worker | undefined
  private ready = false
  /** The worker failed or this was closed: everything is done here. */
  private inline = false
  private nextBatch = 0
  private readonly sent = new Map<number, Array<Request<I, O>>>()

  constructor (private readonly init: BurstWorkerInit<I, O>) {}

  run (item: I): O | Promise<O> {
    if (this.inline) {
      this.stats.here++
      return this.init.inline(item)
    }
    return new Promise<O>((resolve, reject) => {
      this.queue.push({ item, resolve, reject })
      if (this.queue.length === 1) setImmediate(() => { this.dispatch() })
    })
  }

  /** Ends the worker; what it still had, and everything from now on, is done here. */
  async close (): Promise<void> {
    this.inline = true
    const worker = this.worker
    this.worker = undefined
    this.doHere([...this.queue.splice(0), ...this.takeSent()])
    await worker?.terminate()
  }

  private doHere (requests: Array<Request<I, O>>): void {
    this.stats.here += requests.length
    for (const r of requests) {
      try {
        r.resolve(this.init.inline(r.item))
      } catch (err) {
        r.reject(err as Error)
      }
    }
  }

  private dispatch (): void {
    const batch = this.queue
    this.queue = []
    if (batch.length === 0) return
    if (this.inline || (batch.length < WORKER_BATCH && this.sent.size === 0)) {
      this.doHere(batch)
      return
    }
    if (this.worker === undefined) this.startWorker()
    if (!this.ready) {
      this.doHere(batch)
      return
    }
    const id = this.nextBatch++
    this.sent.set(id, batch)
    this.worker!.postMessage({ id, items: batch.map(r => r.item) })
  }

  private startWorker (): void {
    const worker = new Worker(`const { parentPort, workerData } = require('node:worker_threads')\n${this.init.source}\n${LOOP}`, { eval: true, workerData: this.init.workerData })
    worker.unref()
    this.worker = worker
    worker.on('online', () => { this.ready = true })
    worker.on('message', (msg: { id: number, results?: O[], error?: string }) => {
      const batch = this.sent.get(msg.id)
      this.sent.delete(msg.id)
      if (batch === undefined) return
      if (msg.results === undefined || msg.results.length !== batch.length) {
        log.error('%s worker failed a batch: %s', this.init.name, msg.error)
        this.doHere(batch)
        return
      }
      this.stats.inWorker += batch.length
      batch.forEach((r, i) => { r.resolve(msg.results![i]!) })
    })
    const fail = (err: Error): void => {
      if (this.worker !== worker) return
      log.error('%s worker stopped, working on the event loop from now on: %e', this.init.name, err)
      this.inline = true
      this.worker = undefined
      this.doHere(this.takeSent())
    }
    worker.on('error', fail)
    worker.on('messageerror', fail)
    worker.on('exit', (code) => { fail(new Error(`exited with code ${code}`)) })
  }

  private takeSent (): Array<Request<I, O>> {
    const all = [...this.sent.values()].flat()
    this.sent.clear()
    return all
  }
}
