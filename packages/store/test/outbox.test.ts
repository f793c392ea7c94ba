import { newId } from '@persona-mesh/protocol'
import { afterEach, describe, expect, it } from 'vitest'
import { InvalidRecordError, QueueFullError } from '../src/index.js'
import { ALICE, BOB, CAROL, entry, envelope, item, TempStores } from './helpers.js'

const stores = new TempStores()
afterEach(async () => { await stores.cleanup() })

describe('outbox', () => {
  it('adds durably, records queued, and hands back the bytes as-is', async () => {
    const store = await stores.open()
    const e = entry(BOB, { seq: 7 })
    expect(await store.outbox.add([e])).toEqual([{ id: e.id, added: true }])
    const record = await store.outbox.get(e.id)
    expect(record).toMatchObject({ id: e.id, to: BOB, status: 'queued', attempts: 0, seq: 7 })
    const [pending] = await store.outbox.pending(BOB)
    expect(pending.bytes).toEqual(e.bytes)
    expect(pending).toMatchObject({ id: e.id, to: BOB, priority: 'normal', seq: 7, attempts: 0, nextAttemptAt: 0 })
    expect(store.outbox.count()).toEqual({ total: 1, perPeer: { [BOB]: 1 } })
  })

  it('skips ids it already knows, in the same call and across calls', async () => {
    const store = await stores.open()
    const e = entry(BOB)
    expect(await store.outbox.add([e, e])).toEqual([{ id: e.id, added: true }, { id: e.id, added: false }])
    expect(await store.outbox.add([e])).toEqual([{ id: e.id, added: false }])
    expect(store.outbox.count().total).toBe(1)
  })

  it('refuses bad entries before writing anything', async () => {
    const store = await stores.open()
    await expect(store.outbox.add([entry(BOB, { id: 'not-a-ulid' })])).rejects.toBeInstanceOf(InvalidRecordError)
    await expect(store.outbox.add([entry(BOB, { priority: 'urgent' as any })])).rejects.toBeInstanceOf(InvalidRecordError)
    await expect(store.outbox.add([entry('a\x00b')])).rejects.toBeInstanceOf(InvalidRecordError)
    expect(store.outbox.count().total).toBe(0)
  })

  it('drops a call aborted while it waits for its round, and refuses an aborted one', async () => {
    const store = await stores.open()
    const first = store.outbox.add([entry(BOB)])
    // let the first round start, so the next call has to wait for the one after it
    await Promise.resolve()
    await Promise.resolve()
    const controller = new AbortController()
    const late = entry(BOB)
    const waiting = store.outbox.add([late], { signal: controller.signal })
    controller.abort()
    await expect(waiting).rejects.toMatchObject({ name: 'AbortError' })
    await first
    expect(await store.outbox.get(late.id)).toBeUndefined()
    await expect(store.outbox.add([entry(BOB)], { signal: controller.signal })).rejects.toMatchObject({ name: 'AbortError' })
    await expect(store.inbox.accept([item(envelope())], { signal: controller.signal })).rejects.toMatchObject({ name: 'AbortError' })
    expect(store.outbox.count().total).toBe(1)
    expect(store.inbox.unread()).toBe(0)
  })

  it('returns pending entries by priority, then FIFO within a priority', async () => {
    const store = await stores.open()
    const order: Array<'high' | 'normal' | 'low'> = ['low', 'normal', 'high', 'low', 'high', 'normal', 'normal', 'low']
    const added = order.map(priority => entry(BOB, { priority }))
    // added one call at a time and in a shuffled call order: order must come from priority + id only
    for (const e of [...added].reverse()) await store.outbox.add([e])
    await store.outbox.add([entry(CAROL, { priority: 'high' })])
    const pending = await store.outbox.pending(BOB)
    const expected = [
      ...added.filter(e => e.priority === 'high'),
      ...added.filter(e => e.priority === 'normal'),
      ...added.filter(e => e.priority === 'low')
    ].map(e => e.id)
    expect(pending.map(e => e.id)).toEqual(expected)
    expect((await store.outbox.pending(BOB, { limit: 3 })).map(e => e.id)).toEqual(expected.slice(0, 3))
    expect(await store.outbox.pending(ALICE)).toEqual([])
    expect(store.outbox.recipients().sort((a, b) => a.to.localeCompare(b.to))).toEqual([
      { to: BOB, count: 8 },
      { to: CAROL, count: 1 }
    ].sort((a, b) => a.to.localeCompare(b.to)))
  })

  it('bounds a page in bytes: it ends with the entry that reaches maxBytes, in steps past the first chunk, after `after` too', async () => {
    const store = await stores.open()
    // 300 entries (more than one step of the read) of 1,000 bytes each
    const added = Array.from({ length: 300 }, () => entry(BOB, { bytes: new Uint8Array(1000).fill(7) }))
    await store.outbox.add(added)
    const ids = added.map(e => e.id)
    expect((await store.outbox.pending(BOB, { limit: 1000, maxBytes: 250_000 })).map(e => e.id)).toEqual(ids.slice(0, 250))
    expect((await store.outbox.pending(BOB, { limit: 1000, maxBytes: 249_001 })).map(e => e.id)).toEqual(ids.slice(0, 250))
    // at least one entry, however small the bound; `limit` still applies
    expect((await store.outbox.pending(BOB, { limit: 1000, maxBytes: 1 })).map(e => e.id)).toEqual(ids.slice(0, 1))
    expect((await store.outbox.pending(BOB, { limit: 10, maxBytes: 1_000_000 })).map(e => e.id)).toEqual(ids.slice(0, 10))
    // the whole queue when the bound is not reached, and the rest of it after a page
    expect((await store.outbox.pending(BOB, { limit: 1000, maxBytes: 1_000_000 })).map(e => e.id)).toEqual(ids)
    const after = added[199]!
    expect((await store.outbox.pending(BOB, { limit: 1000, maxBytes: 50_000, after })).map(e => e.id)).toEqual(ids.slice(200, 250))
    for (const bad of [0, -1, Number.NaN]) {
      await expect(store.outbox.pending(BOB, { maxBytes: bad })).rejects.toBeInstanceOf(InvalidRecordError)
    }
  })

  it('enforces the per-recipient cap with QueueFullError and writes nothing of the call', async () => {
    const store = await stores.open({ maxQueuePerPeer: 3, maxQueueTotal: 100 })
    await store.outbox.add([entry(BOB), entry(BOB)])
    const over = [entry(CAROL), entry(BOB), entry(BOB)]
    const err = await store.outbox.add(over).catch(e => e)
    expect(err).toBeInstanceOf(QueueFullError)
    expect(err).toMatchObject({ name: 'QueueFullError', scope: 'peer', to: BOB, limit: 3 })
    for (const e of over) expect(await store.outbox.get(e.id)).toBeUndefined()
    expect(await store.outbox.pending(CAROL)).toEqual([])
    expect(store.outbox.count()).toEqual({ total: 2, perPeer: { [BOB]: 2 } })
    // one more still fits; settling frees room
    await store.outbox.add([entry(BOB)])
    const [first] = await store.outbox.pending(BOB, { limit: 1 })
    await expect(store.outbox.add([entry(BOB)])).rejects.toBeInstanceOf(QueueFullError)
    await store.outbox.settle([first.id], { status: 'delivered' })
    await store.outbox.add([entry(BOB)])
    expect(store.outbox.count().perPeer[BOB]).toBe(3)
  })

  it('enforces the total cap, also against concurrent adds', async () => {
    const store = await stores.open({ maxQueuePerPeer: 100, maxQueueTotal: 10 })
    const calls = Array.from({ length: 15 }, (_, i) => store.outbox.add([entry(i % 2 === 0 ? BOB : CAROL)]))
    const results = await Promise.allSettled(calls)
    const ok = results.filter(r => r.status === 'fulfilled')
    const full = results.filter(r => r.status === 'rejected')
    expect(ok).toHaveLength(10)
    expect(full).toHaveLength(5)
    for (const r of full) expect((r as PromiseRejectedResult).reason).toMatchObject({ name: 'QueueFullError', scope: 'total' })
    expect(store.outbox.count().total).toBe(10)
    const listed = await store.outbox.list({ status: 'queued', limit: 100 })
    expect(listed.entries).toHaveLength(10)
  })

  it('settles exactly once and reports the existing state afterwards', async () => {
    const store = await stores.open()
    const [a, b, c] = [entry(BOB), entry(BOB), entry(CAROL)]
    await store.outbox.add([a, b, c])
    expect(await store.outbox.settle([a.id, a.id, 'unknown-id'], { status: 'delivered' })).toEqual([
      { id: a.id, status: 'delivered', changed: true },
      { id: a.id, status: 'delivered', changed: false },
      { id: 'unknown-id', status: 'unknown', changed: false }
    ])
    expect(await store.outbox.settle([a.id], { status: 'failed', reason: 'nope' })).toEqual([
      { id: a.id, status: 'delivered', changed: false }
    ])
    // concurrent settlements with different outcomes: exactly one wins
    const results = await Promise.all([
      store.outbox.settle([b.id], { status: 'delivered' }),
      store.outbox.settle([b.id], { status: 'failed', reason: 'unreachable' }),
      store.outbox.settle([b.id], { status: 'expired' })
    ])
    const winners = results.flat().filter(r => r.changed)
    expect(winners).toHaveLength(1)
    const final = await store.outbox.get(b.id)
    expect(final?.status).toBe(winners[0].status)
    for (const r of results.flat()) expect(r.status).toBe(final?.status)

    await store.outbox.settle([c.id], { status: 'failed', reason: 'incapable' })
    expect(await store.outbox.get(c.id)).toMatchObject({ status: 'failed', reason: 'incapable' })
    expect(await store.outbox.pending(BOB)).toEqual([])
    expect(store.outbox.count()).toEqual({ total: 0, perPeer: {} })
    await expect(store.outbox.settle([c.id], { status: 'failed' } as any)).rejects.toBeInstanceOf(InvalidRecordError)
  })

  it('reschedules queued entries only', async () => {
    const store = await stores.open()
    const e = entry(BOB)
    await store.outbox.add([e])
    expect(await store.outbox.reschedule(e.id, { attempts: 2, nextAttemptAt: 12345, lastError: 'dial failed' })).toBe(true)
    const [p] = await store.outbox.pending(BOB)
    expect(p).toMatchObject({ attempts: 2, nextAttemptAt: 12345, lastError: 'dial failed' })
    expect((await store.outbox.get(e.id))?.attempts).toBe(2)
    await store.outbox.settle([e.id], { status: 'delivered' })
    expect(await store.outbox.reschedule(e.id, { attempts: 3, nextAttemptAt: 1 })).toBe(false)
    expect(await store.outbox.reschedule(newId(), { attempts: 3, nextAttemptAt: 1 })).toBe(false)
  })

  it('finds expired entries', async () => {
    const store = await stores.open()
    const now = Date.now()
    const old = entry(BOB, { expiresAt: now - 10 })
    const edge = entry(BOB, { expiresAt: now })
    const fresh = entry(CAROL, { expiresAt: now + 10_000 })
    await store.outbox.add([old, edge, fresh])
    expect(await store.outbox.expired(now)).toEqual([old.id])
    expect((await store.outbox.expired(now + 20_000)).sort()).toEqual([old.id, edge.id, fresh.id].sort())
    await store.outbox.settle([old.id], { status: 'expired' })
    expect(await store.outbox.expired(now)).toEqual([])
    expect(await store.outbox.get(old.id)).toMatchObject({ status: 'expired' })
  })

  it('lists status records by status and recipient, paging each exactly once', async () => {
    const store = await stores.open()
    const all = Array.from({ length: 25 }, (_, i) => entry(i % 3 === 0 ? CAROL : BOB))
    await store.outbox.add(all)
    const delivered = all.filter((_, i) => i % 4 === 0)
    await store.outbox.settle(delivered.map(e => e.id), { status: 'delivered' })

    async function collect (query: Parameters<typeof store.outbox.list>[0]): Promise<string[]> {
      const ids: string[] = []
      let cursor: string | undefined
      for (;;) {
        const page = await store.outbox.list({ ...query, cursor, limit: 4 })
        ids.push(...page.entries.map(r => r.id))
        cursor = page.nextCursor
        if (!page.more) return ids
      }
    }
    expect(await collect({})).toEqual(all.map(e => e.id))
    expect(await collect({ status: 'delivered' })).toEqual(delivered.map(e => e.id))
    expect(await collect({ status: 'queued' })).toEqual(all.filter(e => !delivered.includes(e)).map(e => e.id))
    expect(await collect({ to: CAROL })).toEqual(all.filter(e => e.to === CAROL).map(e => e.id))
    expect(await collect({ to: BOB, status: 'delivered' })).toEqual(delivered.filter(e => e.to === BOB).map(e => e.id))
    expect(await collect({ reverse: true })).toEqual(all.map(e => e.id).reverse())
    expect(await collect({ status: 'failed' })).toEqual([])
  })

  it('rebuilds counters on open and prunes old settled records', async () => {
    let store = await stores.open()
    const all = [entry(BOB), entry(BOB), entry(CAROL)]
    await store.outbox.add(all)
    await store.outbox.settle([all[0].id], { status: 'delivered' })
    store = await stores.reopen(store)
    expect(store.outbox.count()).toEqual({ total: 2, perPeer: { [BOB]: 1, [CAROL]: 1 } })
    expect(await store.outbox.get(all[0].id)).toMatchObject({ status: 'delivered' })
    expect(await store.outbox.pruneSettled(0)).toBe(0)
    expect(await store.outbox.pruneSettled(Date.now() + 1)).toBe(1)
    expect(await store.outbox.get(all[0].id)).toBeUndefined()
    expect((await store.outbox.list({})).entries.map(r => r.id)).toEqual([all[1].id, all[2].id])
    expect((await store.outbox.list({ to: BOB })).entries.map(r => r.id)).toEqual([all[1].id])
  })

  it('allocates seq numbers that never repeat, concurrently and across reopen', async () => {
    let store = await stores.open({ seqBlock: 5 })
    const seen = new Set<number>()
    const take = (first: number, n: number): void => {
      for (let s = first; s < first + n; s++) {
        expect(seen.has(s)).toBe(false)
        seen.add(s)
      }
    }
    const firsts = await Promise.all(Array.from({ length: 20 }, async (_, i) => [await store.outbox.allocateSeq(1 + (i % 3)), 1 + (i % 3)]))
    for (const [first, n] of firsts) take(first, n)
    let last = Math.max(...seen)
    for (let round = 0; round < 3; round++) {
      store = await stores.reopen(store, { seqBlock: 5 })
      const first = await store.outbox.allocateSeq(3)
      expect(first).toBeGreaterThan(last)
      take(first, 3)
      last = first + 2
    }
    const one = await store.outbox.allocateSeq()
    expect(one).toBe(last + 1)
    await expect(store.outbox.allocateSeq(0)).rejects.toBeInstanceOf(InvalidRecordError)
  })

  it('reserves the next block of seqs once half of one is used, before anyone has to wait for it', async () => {
    let store = await stores.open({ seqBlock: 10 })
    for (let i = 1; i <= 3; i++) expect(await store.outbox.allocateSeq()).toBe(i)
    await store.outbox.drain()
    // the first seq reserved 1–11; a reopened store starts after what was reserved
    store = await stores.reopen(store, { seqBlock: 10 })
    expect(await store.outbox.allocateSeq()).toBe(12)
    // 12 reserved 12–22; at 18 less than half a block is left, and 23–32 is reserved as well
    for (let i = 13; i <= 18; i++) expect(await store.outbox.allocateSeq()).toBe(i)
    await store.outbox.drain()
    store = await stores.reopen(store, { seqBlock: 10 })
    expect(await store.outbox.allocateSeq()).toBe(33)
  })
})
