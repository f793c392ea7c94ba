import { describe, expect, it } from 'vitest'
import { BurstWorker, WORKER_BATCH } from '../src/delivery/burst.js'
import { waitFor } from './harness.js'

interface Internals {
  worker?: { postMessage: (msg: unknown) => void, terminate: () => Promise<number> }
  ready: boolean
  inline: boolean
}

const internals = (burst: BurstWorker<number, string>): Internals => burst as unknown as Internals

/** The same work on both sides, but it says where it was done; the worker refuses 13. */
function doubler (): BurstWorker<number, string> {
  return new BurstWorker<number, string>({
    name: 'doubling',
    source: `const work = (n) => { if (n === 13) throw new Error('unlucky'); return 'worker:' + (n * workerData.factor) }`,
    workerData: { factor: 2 },
    inline: n => `here:${n * 2}`
  })
}

/** A doubler whose worker is up (a first burst started it). */
async function warmDoubler (): Promise<BurstWorker<string>> {
  const burst = doubler()
  await Promise.all(range(0, WORKER_BATCH).map(async n => await burst.run(n)))
  await waitFor(() => internals(burst).ready, 'the worker up')
  return burst
}

const value = (result: string): number => Number(result.slice(result.indexOf(':') + 1))
const where = (result: string): string => result.slice(0, result.indexOf(':'))
const range = (from: number, n: number): number[] => Array.from({ length: n }, (_, i) => from + i)

/** Ask for all of `items` in one turn of the event loop; the results, and the order they resolved in. */
async function ask (burst: BurstWorker<number, string>, items: number[]): Promise<{ results: string[], order: number[] }> {
  const order: number[] = []
  const results = await Promise.all(items.map(async (item, i) => {
    const result = await burst.run(item)
    order.push(i)
    return result
  }))
  return { results, order }
}

describe('BurstWorker', () => {
  it('sends a burst to the worker once it is up, does a few here: the same results, in the order asked', async () => {
    const burst = doubler()
    try {
      // the first burst starts the worker and is done here meanwhile
      const first = await ask(burst, range(100, WORKER_BATCH * 2))
      expect(first.results.map(where)).toEqual(first.results.map(() => 'here'))
      expect(internals(burst).worker).toBeDefined()
      await waitFor(() => internals(burst).ready, 'the worker up')

      const worker = internals(burst).worker!
      let posted = 0
      const post = worker.postMessage.bind(worker)
      worker.postMessage = (msg) => { posted++; post(msg) }
      const items = range(200, WORKER_BATCH * 4)
      const second = ask(burst, items)
      // asked for in the next turn, while the burst is with the worker: it must not overtake it
      await new Promise(resolve => setImmediate(resolve))
      let burstDone = false
      void second.then(() => { burstDone = true })
      const singleDoneFirst = await Promise.resolve(burst.run(1)).then(() => !burstDone)
      const { results, order } = await second
      expect(posted).toBeGreaterThan(0)
      expect(results.map(where)).toEqual(results.map(() => 'worker'))
      expect(results.map(value)).toEqual(items.map(n => n * 2))
      expect(order).toEqual([...order].sort((a, b) => a - b))
      expect(singleDoneFirst).toBe(false)

      // fewer than a burst, nothing outstanding: done here, no message to the worker
      posted = 0
      const small = await ask(burst, range(300, WORKER_BATCH - 1))
      expect(posted).toBe(0)
      expect(small.results).toEqual(range(300, WORKER_BATCH - 1).map(n => `here:${n * 2}`))
    } finally {
      await burst.close()
    }
  })

  it('a batch the worker fails is done here, and the worker goes on with the next', async () => {
    const burst = await warmDoubler()
    try {
      const failed = await ask(burst, range(0, WORKER_BATCH * 2))
      expect(failed.results).toEqual(range(0, WORKER_BATCH * 2).map(n => `here:${n * 2}`))
      const next = await ask(burst, range(20, WORKER_BATCH))
      expect(next.results.map(where)).toEqual(next.results.map(() => 'worker'))
      expect(internals(burst).inline).toBe(false)
    } finally {
      await burst.close()
    }
  })

  it('a worker that dies takes nothing with it: what it held and everything after is done here', async () => {
    const burst = await warmDoubler()
    try {
      const items = range(500, WORKER_BATCH * 3)
      const pending = ask(burst, items)
      // the batch is posted on the next turn; kill the worker right after that
      await new Promise(resolve => setImmediate(resolve))
      await internals(burst).worker!.terminate()
      const { results } = await pending
      expect(results.map(value)).toEqual(items.map(n => n * 2))
      expect(internals(burst).inline).toBe(true)
      expect(await burst.run(7)).toBe('here:14')
    } finally {
      await burst.close()
    }
  })

  it('close() does what is waiting here, ends the worker, and later work is done here', async () => {
    const burst = await warmDoubler()
    const items = range(40, WORKER_BATCH * 2)
    const pending = ask(burst, items)
    await burst.close()
    const { results } = await pending
    expect(results.map(value)).toEqual(items.map(n => n * 2))
    expect(internals(burst).worker).toBeUndefined()
    expect(await burst.run(8)).toBe('here:16')
  })
})
