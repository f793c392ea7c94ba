import { afterEach, describe, expect, it } from 'vitest'
import { jsonSub, readMany, type Sub } from '../src/db.js'
import { TempStores } from './helpers.js'

const stores = new TempStores()
afterEach(async () => { await stores.cleanup() })

/** The sublevel's reads, counted; its event-loop reads take `syncMs` each. */
function counted<V> (sub: Sub<V>, syncMs = 0): Sub<V> & { sync: number, pooled: number } {
  const spy = {
    sync: 0,
    pooled: 0,
    get prefix () { return sub.prefix },
    get status () { return sub.status },
    getSync: (key: string) => {
      spy.sync++
      const until = performance.now() + syncMs
      while (performance.now() < until) { /* a read that went to disk */ }
      return sub.getSync(key)
    },
    getMany: async (keys: string[]) => {
      spy.pooled++
      return await sub.getMany(keys)
    }
  }
  return spy as unknown as Sub<V> & { sync: number, pooled: number }
}

describe('readMany', () => {
  it('reads what getMany reads, missing keys included, on the event loop', async () => {
    const db = await stores.level()
    const sub = jsonSub<{ n: number }>(db, 'r')
    await db.batch([{ type: 'put', sublevel: sub as never, key: 'a', value: { n: 1 } }, { type: 'put', sublevel: sub as never, key: 'c', value: { n: 3 } }])
    const spy = counted(sub)
    const keys = ['a', 'b', 'c', 'a']
    expect(await readMany(spy, keys)).toEqual(await sub.getMany(keys))
    expect(await readMany(spy, keys)).toEqual([{ n: 1 }, undefined, { n: 3 }, { n: 1 }])
    expect(spy).toMatchObject({ sync: 8, pooled: 0 })
  })

  it('reads a large batch through the thread pool, so one round cannot block the event loop for long', async () => {
    const db = await stores.level()
    const spy = counted(jsonSub<number>(db, 'r'))
    const keys = Array.from({ length: 2000 }, (_, i) => `k${i}`)
    expect((await readMany(spy, keys)).every(v => v === undefined)).toBe(true)
    expect(spy).toMatchObject({ sync: 0, pooled: 1 })
  })

  it('reads a sublevel that is still opening through the thread pool (which waits for it)', async () => {
    const db = await stores.level()
    const spy = counted(jsonSub<number>(db, 'r'))
    expect(spy.status).not.toBe('open')
    expect(await readMany(spy, ['x'])).toEqual([undefined])
    expect(spy).toMatchObject({ sync: 0, pooled: 1 })
  })

  it('after a slow batch of event-loop reads (they reached the disk), reads go through the thread pool', async () => {
    const db = await stores.level()
    const slow = counted(jsonSub<number>(db, 'r'), 5)
    await slow.getMany(['x'])
    slow.pooled = 0
    await readMany(slow, ['x'])
    expect(slow).toMatchObject({ sync: 1, pooled: 0 })
    const fast = counted(slow)
    await readMany(fast, ['x', 'y'])
    expect(fast).toMatchObject({ sync: 0, pooled: 1 })
  })
})
