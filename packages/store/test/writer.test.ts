import { afterEach, describe, expect, it } from 'vitest'
import { jsonSub } from '../src/db.js'
import { SyncWriter } from '../src/writer.js'
import { TempStores } from './helpers.js'

const stores = new TempStores()
afterEach(async () => { await stores.cleanup() })

describe('group commit', () => {
  it('syncs a batch when any of its writes asks for it, and only then', async () => {
    const db = await stores.level()
    const writer = new SyncWriter(db)
    const sub = jsonSub<number>(db, 'x')
    await writer.write([{ type: 'put', sublevel: sub, key: 'lazy', value: 1 }], { sync: false })
    expect(writer.stats).toMatchObject({ batches: 1, synced: 0 })
    await Promise.all([
      writer.write([{ type: 'put', sublevel: sub, key: 'lazy2', value: 2 }], { sync: false }),
      writer.write([{ type: 'put', sublevel: sub, key: 'durable', value: 3 }])
    ])
    expect(writer.stats).toMatchObject({ batches: 2, synced: 1, writes: 3 })
    expect(await sub.getMany(['lazy', 'lazy2', 'durable'])).toEqual([1, 2, 3])
  })

  it('coalesces writes issued together into one synced batch', async () => {
    const db = await stores.level()
    const writer = new SyncWriter(db)
    const sub = jsonSub<number>(db, 'x')
    await Promise.all(Array.from({ length: 200 }, async (_, i) => {
      await writer.write([{ type: 'put', sublevel: sub, key: `k${i}`, value: i }])
    }))
    expect(writer.stats).toEqual({ batches: 1, synced: 1, writes: 200, ops: 200 })
    expect(await sub.get('k199')).toBe(199)
  })

  it('puts everything requested while a batch is in flight into the next batch', async () => {
    const db = await stores.level()
    const writer = new SyncWriter(db)
    const sub = jsonSub<number>(db, 'x')
    let firstDone = false
    const first = writer.write([{ type: 'put', sublevel: sub, key: 'first', value: 0 }]).then(() => { firstDone = true })
    // let the first batch start (it starts on a microtask), then pile up writes behind it
    await Promise.resolve()
    await Promise.resolve()
    expect(writer.stats.batches).toBe(0)
    const later = Array.from({ length: 50 }, async (_, i) => {
      await writer.write([{ type: 'put', sublevel: sub, key: `k${i}`, value: i }])
      // a write resolves only after its own batch, which comes after the first one
      expect(firstDone).toBe(true)
    })
    await Promise.all([first, ...later])
    expect(writer.stats).toEqual({ batches: 2, synced: 2, writes: 51, ops: 51 })
  })

  it('keeps one bad write from failing the others it was batched with', async () => {
    const db = await stores.level()
    const writer = new SyncWriter(db)
    const sub = jsonSub<unknown>(db, 'x')
    const results = await Promise.allSettled([
      writer.write([{ type: 'put', sublevel: sub, key: 'a', value: 1 }]),
      writer.write([{ type: 'put', sublevel: sub, key: 'bad', value: 1n }]), // JSON cannot encode a BigInt
      writer.write([{ type: 'put', sublevel: sub, key: 'b', value: 2 }, { type: 'put', sublevel: sub, key: 'c', value: 3 }])
    ])
    expect(results.map(r => r.status)).toEqual(['fulfilled', 'rejected', 'fulfilled'])
    expect((results[1] as PromiseRejectedResult).reason.name).toBe('InvalidRecordError')
    expect(await sub.getMany(['a', 'bad', 'b', 'c'])).toEqual([1, undefined, 2, 3])
  })

  it('drops a queued write whose signal aborts, and refuses an aborted one', async () => {
    const db = await stores.level()
    const writer = new SyncWriter(db)
    const sub = jsonSub<number>(db, 'x')
    const controller = new AbortController()
    const first = writer.write([{ type: 'put', sublevel: sub, key: 'a', value: 1 }])
    await Promise.resolve()
    await Promise.resolve()
    const queued = writer.write([{ type: 'put', sublevel: sub, key: 'b', value: 2 }], { signal: controller.signal })
    controller.abort()
    await expect(queued).rejects.toMatchObject({ name: 'AbortError' })
    await first
    expect(await sub.get('b')).toBeUndefined()
    await expect(writer.write([{ type: 'put', sublevel: sub, key: 'c', value: 3 }], { signal: controller.signal }))
      .rejects.toMatchObject({ name: 'AbortError' })
  })

  it('group-commits concurrent writes of different services', async () => {
    const store = await stores.open()
    const before = store.stats().writer
    await Promise.all([
      ...Array.from({ length: 50 }, async (_, i) => { await store.meta.put(`k${i}`, i) }),
      ...Array.from({ length: 50 }, async (_, i) => { await store.tasks.put({ id: `t${i}`, direction: 'incoming', status: 'pending', peer: 'p' }) })
    ])
    const after = store.stats().writer
    expect(after.writes - before.writes).toBeGreaterThanOrEqual(51)
    expect(after.batches - before.batches).toBeLessThan(10)
    expect(await store.meta.get('k49')).toBe(49)
  })
})
