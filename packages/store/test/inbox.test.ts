import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import type { InboxEntry, InboxQuery, MeshStore } from '../src/index.js'
import { bytesSub, decodeRecord, encodeRecord, openLevel } from '../src/db.js'
import { InvalidRecordError } from '../src/index.js'
import { ALICE, BOB, CAROL, envelope, item, TempStores } from './helpers.js'

const stores = new TempStores()
afterEach(async () => { await stores.cleanup() })

async function readAll (store: MeshStore, query: InboxQuery = {}, limit = 3): Promise<InboxEntry[]> {
  const out: InboxEntry[] = []
  let cursor: string | undefined
  for (;;) {
    const page = await store.inbox.read({ ...query, cursor, limit })
    out.push(...page.entries)
    cursor = page.nextCursor
    if (!page.more) return out
  }
}

describe('inbox', () => {
  it('stores an envelope with its fields, bytes and sender seq', async () => {
    const store = await stores.open()
    const env = envelope({ seq: 4, thread: 't1', kind: 'request', priority: 'high', body: { q: 42 } })
    const it1 = item(env, { receivedAt: 1000 })
    expect(await store.inbox.accept([it1])).toEqual(['stored'])
    const got = await store.inbox.get(env.id)
    expect(got).toMatchObject({
      id: env.id,
      from: ALICE,
      to: BOB,
      kind: 'request',
      thread: 't1',
      priority: 'high',
      createdAt: env.createdAt,
      expiresAt: env.expiresAt,
      receivedAt: 1000,
      body: { q: 42 },
      acked: false,
      quarantined: false,
      trace: env.trace,
      hop: 0,
      seq: 4
    })
    expect(typeof got?.cursor).toBe('string')
    expect(await store.inbox.bytes(env.id)).toEqual(it1.bytes)
    expect(await store.inbox.highestSeq(ALICE)).toBe(4)
    expect(store.inbox.unread()).toBe(1)
    expect(store.inbox.endCursor()).toBe(got?.cursor)
  })

  it('dedupes by id and by sender/seq, within one call and across calls', async () => {
    const store = await stores.open()
    const a = envelope({ seq: 1 })
    const sameSeq = envelope({ seq: 1 }) // new id, same sender + seq: a replay under a new id
    const b = envelope({ seq: 2 })
    const otherSender = envelope({ from: CAROL, seq: 1 })
    expect(await store.inbox.accept([item(a), item(a), item(sameSeq), item(b), item(otherSender)]))
      .toEqual(['stored', 'duplicate', 'duplicate', 'stored', 'stored'])
    expect(await store.inbox.accept([item(b), item(envelope({ seq: 2 })), item(envelope({ seq: 3 }))]))
      .toEqual(['duplicate', 'duplicate', 'stored'])
    expect(await store.inbox.accept([item({ ...a, seq: 99 })])).toEqual(['duplicate'])
    expect(store.inbox.unread()).toBe(4)
    expect(await store.inbox.highestSeq(ALICE)).toBe(3)
    expect(await store.inbox.highestSeq(CAROL)).toBe(1)
  })

  it('dedupes concurrent accepts of the same envelopes: each stored exactly once', async () => {
    const store = await stores.open()
    const envs = Array.from({ length: 20 }, (_, i) => envelope({ seq: i + 1 }))
    const calls = Array.from({ length: 10 }, (_, c) => store.inbox.accept(envs.filter((_, i) => (i + c) % 3 !== 0).map(e => item(e))))
    calls.push(store.inbox.accept(envs.map(e => item(e))))
    const results = (await Promise.all(calls)).flat()
    expect(results.filter(r => r === 'stored')).toHaveLength(20)
    const entries = await readAll(store, {}, 7)
    expect(entries.map(e => e.id).sort()).toEqual(envs.map(e => e.id).sort())
    expect(store.inbox.unread()).toBe(20)
  })

  it('keeps dedupe keys, the unread count and the order across close/reopen', async () => {
    let store = await stores.open()
    const envs = Array.from({ length: 5 }, (_, i) => envelope({ seq: i + 1 }))
    await store.inbox.accept(envs.map(e => item(e)))
    await store.inbox.ack([envs[1].id])
    const before = await readAll(store)
    store = await stores.reopen(store)
    expect(store.inbox.unread()).toBe(4)
    expect(await store.inbox.accept([item(envs[0]), item(envelope({ seq: 3 })), item(envelope({ seq: 6 }))]))
      .toEqual(['duplicate', 'duplicate', 'stored'])
    expect(store.inbox.unread()).toBe(5)
    const after = await readAll(store)
    expect(after.slice(0, 5)).toEqual(before)
    expect(after).toHaveLength(6)
    // receipt keys keep growing after reopen: the new entry comes after the old ones
    expect(after[5].seq).toBe(6)
  })

  it('pages with a cursor: every entry exactly once, in receipt order, and peeking never consumes', async () => {
    const store = await stores.open()
    const envs = Array.from({ length: 23 }, (_, i) => envelope({ seq: i + 1 }))
    for (let i = 0; i < envs.length; i += 5) await store.inbox.accept(envs.slice(i, i + 5).map(e => item(e)))
    for (const limit of [1, 4, 23, 50]) {
      const ids = (await readAll(store, {}, limit)).map(e => e.id)
      expect(ids).toEqual(envs.map(e => e.id))
    }
    expect(store.inbox.unread()).toBe(23)
    // a cursor kept at the end sees only what arrives later
    const end = await store.inbox.read({ cursor: store.inbox.endCursor() })
    expect(end).toMatchObject({ entries: [], more: false, nextCursor: store.inbox.endCursor() })
    const late = envelope({ seq: 100 })
    await store.inbox.accept([item(late)])
    const next = await store.inbox.read({ cursor: end.nextCursor })
    expect(next.entries.map(e => e.id)).toEqual([late.id])
    await expect(store.inbox.read({ cursor: 'not a cursor!' })).rejects.toBeInstanceOf(InvalidRecordError)
  })

  it('filters by sender, thread, kind, topic and unread', async () => {
    const store = await stores.open()
    const e1 = envelope({ seq: 1, thread: 'x' })
    const e2 = envelope({ from: CAROL, seq: 1, kind: 'task.delegate' })
    const e3 = envelope({ seq: 2, thread: 'x', kind: 'request' })
    const e4 = envelope({ from: CAROL, seq: 2, kind: 'broadcast', to: 'topic:news' })
    await store.inbox.accept([item(e1), item(e2), item(e3), item(e4, { topic: 'news' })])
    const ids = async (q: InboxQuery): Promise<string[]> => (await readAll(store, q, 1)).map(e => e.id)
    expect(await ids({ from: CAROL })).toEqual([e2.id, e4.id])
    expect(await ids({ thread: 'x' })).toEqual([e1.id, e3.id])
    expect(await ids({ kind: 'request' })).toEqual([e3.id])
    expect(await ids({ kind: ['request', 'task.delegate'] })).toEqual([e2.id, e3.id])
    expect(await ids({ topic: 'news' })).toEqual([e4.id])
    expect(await store.inbox.ack([e1.id, e3.id, e3.id, 'nope'])).toEqual(['acked', 'acked', 'already-acked', 'unknown'])
    expect(store.inbox.unread()).toBe(2)
    expect(await ids({ unreadOnly: true })).toEqual([e2.id, e4.id])
    expect(await ids({ unreadOnly: true, from: ALICE })).toEqual([])
    expect(await ids({})).toHaveLength(4)
    expect((await store.inbox.get(e1.id))?.acked).toBe(true)
    expect(await store.inbox.ack([e1.id])).toEqual(['already-acked'])
  })

  it('quarantines entries apart and releases them to the end of the inbox', async () => {
    let store = await stores.open()
    const normal = envelope({ seq: 1 })
    const q1 = envelope({ from: CAROL, seq: 1 })
    const q2 = envelope({ from: CAROL, seq: 2 })
    await store.inbox.accept([item(q1, { quarantined: true }), item(normal), item(q2, { quarantined: true })])
    expect(store.inbox.unread()).toBe(1)
    expect(store.inbox.quarantined()).toBe(2)
    expect((await readAll(store)).map(e => e.id)).toEqual([normal.id])
    expect((await readAll(store, { quarantined: true })).map(e => e.id)).toEqual([q1.id, q2.id])
    expect((await store.inbox.get(q1.id))?.quarantined).toBe(true)
    // a quarantined duplicate is still a duplicate
    expect(await store.inbox.accept([item(q1)])).toEqual(['duplicate'])

    const cursor = store.inbox.endCursor()
    expect(await store.inbox.release([q2.id, normal.id, 'nope'])).toEqual(['released', 'not-quarantined', 'unknown'])
    expect(store.inbox.unread()).toBe(2)
    expect(store.inbox.quarantined()).toBe(1)
    expect((await readAll(store)).map(e => e.id)).toEqual([normal.id, q2.id])
    // a reader that had reached the end sees the released entry
    expect((await store.inbox.read({ cursor })).entries.map(e => e.id)).toEqual([q2.id])
    expect(await store.inbox.get(q2.id)).toMatchObject({ quarantined: false, acked: false })

    store = await stores.reopen(store)
    expect(store.inbox.unread()).toBe(2)
    expect(store.inbox.quarantined()).toBe(1)
    expect(await store.inbox.release([q2.id])).toEqual(['not-quarantined'])
  })

  it('prunes expired dedupe keys only', async () => {
    const store = await stores.open({ dedupeTtl: 1000 })
    const now = Date.now()
    const short = envelope({ seq: 1, createdAt: now, ttl: 10 })
    const long = envelope({ seq: 2, createdAt: now, ttl: 1_000_000 })
    await store.inbox.accept([item(short, { receivedAt: now }), item(long, { receivedAt: now })])
    // short: kept until receivedAt + dedupeTtl (longer than its own ttl); long: until it expires
    expect(await store.inbox.pruneDedupe(now + 999)).toBe(0)
    expect(await store.inbox.pruneDedupe(now + 1001)).toBe(2)
    expect(await store.inbox.accept([item(short), item(long)])).toEqual(['stored', 'duplicate'])
    expect(await store.inbox.pruneDedupe(now + 1_000_001)).toBe(4)
  })

  it('keeps a body once, in the envelope bytes, and reads it back from them', async () => {
    const path = join(await stores.dir(), 'db')
    let store = await stores.open({ path })
    const body = { text: 'x'.repeat(500), n: [1, 2, { deep: null }] }
    const env = envelope({ seq: 1, body })
    const broken = envelope({ from: CAROL, seq: 2 })
    expect(await store.inbox.accept([item(env), item(broken)])).toEqual(['stored', 'stored'])
    await store.close()

    // the record's header has every field but the body; its blob is the envelope as received
    const db = openLevel(path)
    await db.open()
    const ib = bytesSub(db, 'ib')
    const [[, value], [brokenKey, brokenValue]] = await ib.iterator().all()
    const record = decodeRecord<Record<string, unknown>>(value)!
    expect(record.header).not.toHaveProperty('body')
    expect(record.header).toMatchObject({ id: env.id, from: ALICE, seq: 1 })
    expect(record.blob).toEqual(item(env).bytes)
    // an entry whose stored envelope no longer decodes
    const damaged = decodeRecord<Record<string, unknown>>(brokenValue)!
    await ib.put(brokenKey, encodeRecord(damaged.header, new Uint8Array([1, 2, 3])))
    await db.close()

    store = await stores.open({ path })
    expect((await store.inbox.get(env.id))?.body).toEqual(body)
    await expect(store.inbox.get(broken.id)).rejects.toThrow(InvalidRecordError)
    await expect(store.inbox.read()).rejects.toThrow(/does not decode/)
    // entries a filter skips are never decoded
    expect((await store.inbox.read({ from: ALICE })).entries.map(e => e.body)).toEqual([body])
  })

  it('refuses malformed items', async () => {
    const store = await stores.open()
    await expect(store.inbox.accept([{ envelope: envelope(), bytes: 'x' as any, receivedAt: 1 }])).rejects.toBeInstanceOf(InvalidRecordError)
    await expect(store.inbox.accept([item({ ...envelope(), seq: -1 })])).rejects.toBeInstanceOf(InvalidRecordError)
    expect(store.inbox.unread()).toBe(0)
  })
})

describe('inbox.receive (best-effort receipts)', () => {
  it('hands the entry back at once; reads, unread and ack see it before its write lands; written unsynced', async () => {
    const store = await stores.open()
    const env = envelope({ seq: 7, kind: 'broadcast', to: 'topic:news', body: { hi: 1 } })
    const before = store.stats().writer.synced
    const got = store.inbox.receive(item(env, { receivedAt: 5, topic: 'news' }))
    expect(got?.entry).toMatchObject({ id: env.id, kind: 'broadcast', topic: 'news', body: { hi: 1 }, receivedAt: 5, seq: 7, acked: false })
    expect(store.inbox.unread()).toBe(1)
    // not awaited: a reader who heard of the entry finds it
    expect(await store.inbox.get(env.id)).toEqual(got?.entry)
    expect((await readAll(store)).map(e => e.id)).toEqual([env.id])
    expect(await store.inbox.ack([env.id])).toEqual(['acked'])
    await got?.written
    expect(store.stats().writer.synced).toBe(before + 1) // the ack, not the receipt
    expect(await store.inbox.highestSeq(ALICE)).toBe(7)
    expect(store.inbox.endCursor()).toBe(got?.entry.cursor)
  })

  it('refuses duplicates by id and by sender + seq: stored, pending, or accepted the durable way', async () => {
    const store = await stores.open()
    const a = envelope({ seq: 1, kind: 'broadcast', to: 'topic:news' })
    const first = store.inbox.receive(item(a))
    expect(first).toBeDefined()
    // while its write is pending
    expect(store.inbox.receive(item(a))).toBeUndefined()
    expect(store.inbox.receive(item(envelope({ seq: 1, kind: 'broadcast', to: 'topic:news' })))).toBeUndefined()
    await first?.written
    // once stored
    expect(store.inbox.receive(item(a))).toBeUndefined()
    expect(store.inbox.receive(item(envelope({ seq: 1, kind: 'broadcast', to: 'topic:news' })))).toBeUndefined()
    // and against what accept stored
    const b = envelope({ seq: 2 })
    expect(await store.inbox.accept([item(b)])).toEqual(['stored'])
    expect(store.inbox.receive(item(b))).toBeUndefined()
    // accept sees what receive took
    const c = envelope({ seq: 3, kind: 'broadcast', to: 'topic:news' })
    expect(store.inbox.receive(item(c))).toBeDefined()
    expect(await store.inbox.accept([item(c), item(envelope({ seq: 3 }))])).toEqual(['duplicate', 'duplicate'])
    expect((await readAll(store)).map(e => e.id)).toEqual([a.id, b.id, c.id])
    expect(store.inbox.unread()).toBe(3)
  })

  it('survives a reopen (the write went to the OS) and refuses bad items with InvalidRecordError', async () => {
    const path = join(await stores.dir(), 'db')
    let store = await stores.open({ path })
    const env = envelope({ seq: 9, kind: 'broadcast', to: 'topic:news' })
    await store.inbox.receive(item(env))?.written
    await store.close()
    store = await stores.open({ path })
    expect(await store.inbox.get(env.id)).toMatchObject({ id: env.id, seq: 9 })
    expect(store.inbox.receive(item(env))).toBeUndefined()
    expect(() => store.inbox.receive({ envelope: undefined } as never)).toThrow(InvalidRecordError)
  })
})
