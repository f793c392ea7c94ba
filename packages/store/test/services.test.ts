import { childTrace, newId, newTrace, traceId } from '@persona-mesh/protocol'
import { afterEach, describe, expect, it } from 'vitest'
import type { AuditEvent, AuditQuery, MeshStore } from '../src/index.js'
import { InvalidRecordError } from '../src/index.js'
import { ALICE, BOB, bytesOf, CAROL, TempStores } from './helpers.js'

const stores = new TempStores()
afterEach(async () => { await stores.cleanup() })

describe('card cache', () => {
  it('puts, gets, lists and deletes; a lower seq never replaces a higher one', async () => {
    let store = await stores.open()
    const card = { name: 'bob', seq: 2, capabilities: [{ name: 'summarize', tags: ['text'] }] }
    expect(await store.cards.put(BOB, { seq: 2, bytes: bytesOf('sealed-2'), card, verifiedAt: 100 })).toBe(true)
    expect(await store.cards.put(BOB, { seq: 1, bytes: bytesOf('sealed-1'), card: { ...card, seq: 1 }, verifiedAt: 200 })).toBe(false)
    expect(await store.cards.put(BOB, { seq: 2, bytes: bytesOf('sealed-2'), card, verifiedAt: 300 })).toBe(true)
    expect(await store.cards.put(CAROL, { seq: 9, bytes: bytesOf('c'), card: { name: 'carol' }, verifiedAt: 1 })).toBe(true)
    store = await stores.reopen(store)
    const got = await store.cards.get(BOB)
    expect(got).toMatchObject({ peerId: BOB, seq: 2, card, verifiedAt: 300 })
    expect(got?.bytes).toEqual(bytesOf('sealed-2'))
    expect((await store.cards.list()).map(c => c.peerId).sort()).toEqual([BOB, CAROL].sort())
    expect(await store.cards.delete(BOB)).toBe(true)
    expect(await store.cards.delete(BOB)).toBe(false)
    expect(await store.cards.get(BOB)).toBeUndefined()
    expect(await store.cards.get(ALICE)).toBeUndefined()
  })
})

describe('tasks', () => {
  it('stores any JSON task and lists by direction, status and peer as the status moves', async () => {
    let store = await stores.open()
    const ids = Array.from({ length: 6 }, () => newId())
    for (const [i, id] of ids.entries()) {
      await store.tasks.put({
        id,
        direction: i % 2 === 0 ? 'incoming' : 'outgoing',
        status: 'pending',
        peer: i < 3 ? BOB : CAROL,
        capability: 'summarize',
        input: { n: i },
        deadline: 1000 + i
      })
    }
    await store.tasks.put({ ...(await store.tasks.get(ids[0]))!, status: 'completed', result: { ok: true } })
    await store.tasks.put({ ...(await store.tasks.get(ids[1]))!, status: 'working', progress: 0.5 })
    store = await stores.reopen(store)
    expect(await store.tasks.get(ids[0])).toMatchObject({ status: 'completed', result: { ok: true }, input: { n: 0 } })
    const list = async (q: Parameters<MeshStore['tasks']['list']>[0]): Promise<string[]> => {
      const out: string[] = []
      let cursor: string | undefined
      for (;;) {
        const page = await store.tasks.list({ ...q, cursor, limit: 2 })
        out.push(...page.entries.map(t => t.id))
        cursor = page.nextCursor
        if (!page.more) return out
      }
    }
    expect(await list({})).toEqual(ids)
    expect(await list({ direction: 'incoming' })).toEqual([ids[0], ids[2], ids[4]])
    expect(await list({ status: 'pending' })).toEqual([ids[2], ids[3], ids[4], ids[5]])
    expect(await list({ direction: 'outgoing', status: 'pending' })).toEqual([ids[3], ids[5]])
    expect(await list({ direction: 'outgoing', status: 'working' })).toEqual([ids[1]])
    expect(await list({ peer: CAROL })).toEqual(ids.slice(3))
    expect(await list({ peer: BOB, status: 'pending' })).toEqual([ids[2]])
    expect(await list({ status: 'completed', reverse: true })).toEqual([ids[0]])
    expect(await store.tasks.delete(ids[0])).toBe(true)
    expect(await list({ status: 'completed' })).toEqual([])
    await expect(store.tasks.put({ id: 'x', direction: 'sideways' as any, status: 's', peer: BOB })).rejects.toBeInstanceOf(InvalidRecordError)
  })
})

describe('audit log', () => {
  it('appends and queries in time order, by trace (any span), peer and id, with since/until', async () => {
    const store = await stores.open()
    const trace = newTrace()
    const child = childTrace(trace)
    const other = newTrace()
    const events: AuditEvent[] = [
      { at: 5000, kind: 'send', peer: BOB, trace, id: 'm1', outcome: 'queued' },
      { at: 1000, kind: 'call', peer: CAROL, trace: other, outcome: 'ok' },
      { at: 3000, kind: 'delegate', peer: CAROL, trace: child, id: 't1', outcome: 'accepted', detail: { capability: 'x' } },
      { at: 3000, kind: 'deliver', peer: BOB, trace, id: 'm1', outcome: 'delivered' },
      { at: 9000, kind: 'policy', outcome: 'denied' }
    ]
    await store.audit.append(events.slice(0, 2))
    await store.audit.append(events.slice(2))
    const all = async (q: AuditQuery): Promise<AuditEvent[]> => {
      const out: AuditEvent[] = []
      let cursor: string | undefined
      for (;;) {
        const page = await store.audit.query({ ...q, cursor, limit: 2 })
        out.push(...page.entries)
        cursor = page.nextCursor
        if (!page.more) return out
      }
    }
    expect((await all({})).map(e => e.at)).toEqual([1000, 3000, 3000, 5000, 9000])
    expect((await all({ trace })).map(e => e.kind)).toEqual(['delegate', 'deliver', 'send'])
    expect((await all({ trace: traceId(child) })).map(e => e.kind)).toEqual(['delegate', 'deliver', 'send'])
    expect((await all({ peer: CAROL })).map(e => e.kind)).toEqual(['call', 'delegate'])
    expect((await all({ id: 'm1' })).map(e => e.outcome)).toEqual(['delivered', 'queued'])
    expect((await all({ trace, peer: BOB })).map(e => e.kind)).toEqual(['deliver', 'send'])
    expect((await all({ since: 3000, until: 9000 })).map(e => e.at)).toEqual([3000, 3000, 5000])
    expect((await all({ trace, since: 4000 })).map(e => e.kind)).toEqual(['send'])
    expect((await all({ trace: other })).map(e => e.kind)).toEqual(['call'])
    expect(await store.audit.prune(3001)).toBe(3)
    expect((await all({})).map(e => e.at)).toEqual([5000, 9000])
    expect((await all({ trace })).map(e => e.kind)).toEqual(['send'])
  })
})

describe('meta', () => {
  it('keeps JSON values across reopen', async () => {
    let store = await stores.open()
    await store.meta.put('subscriptions', ['news', 'jobs'])
    await store.meta.put('card.seq', 7)
    await store.meta.put('config', { mdns: false })
    await store.meta.delete('config')
    store = await stores.reopen(store)
    expect(await store.meta.get('subscriptions')).toEqual(['news', 'jobs'])
    expect(await store.meta.get<number>('card.seq')).toBe(7)
    expect(await store.meta.get('config')).toBeUndefined()
    await expect(store.meta.put('bad', undefined as any)).rejects.toBeInstanceOf(InvalidRecordError)
  })
})
