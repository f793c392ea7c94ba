import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { bytesSub, indexSub, jsonSub, openLevel, pad, SEP } from '../src/db.js'
import { ALICE, BOB, bytesOf, CAROL, entry, envelope, item, TempStores } from './helpers.js'

const stores = new TempStores()
afterEach(async () => { await stores.cleanup() })

/**
 * A data directory as the first layout wrote it (JSON records, envelopes in their own sublevels,
 * index keys for queued entries, one dedupe expiry key per dedupe key), built by hand.
 */
async function legacyStore (path: string): Promise<{ queued: ReturnType<typeof entry>[], delivered: ReturnType<typeof entry>, inbox: ReturnType<typeof envelope>[] }> {
  const db = openLevel(path)
  await db.open()
  const ob = jsonSub<unknown>(db, 'ob')
  const obb = bytesSub(db, 'obb')
  const obs = jsonSub<unknown>(db, 'obs')
  const obx = indexSub(db, 'obx')
  const obe = indexSub(db, 'obe')
  const ib = jsonSub<unknown>(db, 'ib')
  const ibb = bytesSub(db, 'ibb')
  const ibid = jsonSub<unknown>(db, 'ibid')
  const ibu = indexSub(db, 'ibu')
  const dd = jsonSub<number>(db, 'dd')
  const dde = indexSub(db, 'dde')
  const snd = jsonSub<number>(db, 'snd')
  const now = Date.now()
  const queued = [entry(BOB, { priority: 'high' }), entry(BOB), entry(CAROL, { attempts: 2, nextAttemptAt: 5 })]
  const delivered = entry(BOB)
  const ops: any[] = []
  const rank = { high: '0', normal: '1', low: '2' } as const
  for (const e of queued) {
    ops.push({ type: 'put', sublevel: ob, key: `${e.to}${SEP}${rank[e.priority]}${SEP}${e.id}`, value: { id: e.id, to: e.to, priority: e.priority, seq: e.seq, createdAt: e.createdAt, expiresAt: e.expiresAt, attempts: e.attempts ?? 0, nextAttemptAt: e.nextAttemptAt ?? 0, ...(e.attempts !== undefined ? { lastError: 'overloaded' } : {}) } })
    ops.push({ type: 'put', sublevel: obb, key: e.id, value: e.bytes })
    ops.push({ type: 'put', sublevel: obe, key: `${pad(e.expiresAt)}${SEP}${e.id}`, value: '' })
    ops.push({ type: 'put', sublevel: obs, key: e.id, value: { id: e.id, to: e.to, priority: e.priority, seq: e.seq, status: 'queued', createdAt: e.createdAt, expiresAt: e.expiresAt, updatedAt: now, attempts: e.attempts ?? 0 } })
    for (const k of [`p${SEP}${e.to}${SEP}${e.id}`, `s${SEP}queued${SEP}${e.id}`, `ps${SEP}${e.to}${SEP}queued${SEP}${e.id}`]) ops.push({ type: 'put', sublevel: obx, key: k, value: '' })
  }
  ops.push({ type: 'put', sublevel: obs, key: delivered.id, value: { id: delivered.id, to: BOB, priority: 'normal', seq: 1, status: 'delivered', createdAt: now, expiresAt: now + 60_000, updatedAt: now, attempts: 0 } })
  for (const k of [`p${SEP}${BOB}${SEP}${delivered.id}`, `s${SEP}delivered${SEP}${delivered.id}`, `ps${SEP}${BOB}${SEP}delivered${SEP}${delivered.id}`]) ops.push({ type: 'put', sublevel: obx, key: k, value: '' })

  const inbox = [envelope({ seq: 1, body: { n: 1 } }), envelope({ seq: 2, body: { n: 2 } })]
  inbox.forEach((e, i) => {
    const key = pad(i + 1)
    const expiry = now + 1000
    ops.push({ type: 'put', sublevel: ib, key, value: { id: e.id, from: e.from, to: e.to, kind: e.kind, priority: e.priority, createdAt: e.createdAt, expiresAt: e.expiresAt, receivedAt: now, body: e.body, acked: false, quarantined: false, trace: e.trace, hop: e.hop, seq: e.seq } })
    ops.push({ type: 'put', sublevel: ibb, key: e.id, value: bytesOf(e.id) })
    ops.push({ type: 'put', sublevel: ibid, key: e.id, value: { key, q: false } })
    ops.push({ type: 'put', sublevel: ibu, key, value: '' })
    for (const k of [`i${SEP}${e.id}`, `s${SEP}${e.from}${SEP}${e.seq}`]) {
      ops.push({ type: 'put', sublevel: dd, key: k, value: expiry })
      ops.push({ type: 'put', sublevel: dde, key: `${pad(expiry)}${SEP}${k}`, value: '' })
    }
  })
  ops.push({ type: 'put', sublevel: snd, key: ALICE, value: 2 })
  await db.batch(ops)
  await db.close()
  return { queued, delivered, inbox }
}

describe('a store written by the first layout', () => {
  it('is converted on open: outbox, inbox, dedupe keys and listings all carry on', async () => {
    const path = join(await stores.dir(), 'db')
    const legacy = await legacyStore(path)
    let store = await stores.open({ path })
    const [high, normal, carol] = legacy.queued

    expect(store.outbox.count()).toEqual({ total: 3, perPeer: { [BOB]: 2, [CAROL]: 1 } })
    const pending = await store.outbox.pending(BOB)
    expect(pending.map(e => e.id)).toEqual([high.id, normal.id])
    expect(pending[0]).toMatchObject({ to: BOB, priority: 'high', seq: high.seq, expiresAt: high.expiresAt, attempts: 0 })
    expect(pending[0].bytes).toEqual(high.bytes)
    expect((await store.outbox.pending(CAROL))[0]).toMatchObject({ attempts: 2, nextAttemptAt: 5, lastError: 'overloaded' })
    expect((await store.outbox.list({ status: 'queued' })).entries.map(r => r.id).sort()).toEqual([high.id, normal.id, carol.id].sort())
    expect((await store.outbox.list({ to: BOB })).entries.map(r => r.id).sort()).toEqual([high.id, normal.id, legacy.delivered.id].sort())
    expect((await store.outbox.list({ status: 'delivered' })).entries.map(r => r.id)).toEqual([legacy.delivered.id])
    await store.outbox.settle([high.id], { status: 'delivered' })
    expect((await store.outbox.list({ to: BOB, status: 'queued' })).entries.map(r => r.id)).toEqual([normal.id])
    expect(await store.outbox.expired(Date.now() + 120_000)).toHaveLength(2)

    const [a, b] = legacy.inbox
    expect(store.inbox.unread()).toBe(2)
    expect(await store.inbox.get(a.id)).toMatchObject({ id: a.id, body: { n: 1 }, acked: false })
    expect(await store.inbox.bytes(b.id)).toEqual(bytesOf(b.id))
    expect((await store.inbox.read()).entries.map(e => e.id)).toEqual([a.id, b.id])
    // the old dedupe keys still count, by id and by seq
    expect(await store.inbox.accept([item(a), item(envelope({ seq: 2 })), item(envelope({ seq: 3 }))])).toEqual(['duplicate', 'duplicate', 'stored'])
    expect(await store.inbox.ack([a.id])).toEqual(['acked'])
    expect(await store.inbox.highestSeq(ALICE)).toBe(3)

    // once, not again: reopening changes nothing
    store = await stores.reopen(store)
    expect((await store.outbox.pending(BOB)).map(e => e.id)).toEqual([normal.id])
    expect(store.inbox.unread()).toBe(2)
    expect(await store.inbox.get(a.id)).toMatchObject({ acked: true })
    // old expiry keys prune what they stood for: 2 ids + 2 seqs; the new message's 2 stay
    expect(await store.inbox.pruneDedupe(Date.now() + 2000)).toBe(4)
    expect(await store.inbox.accept([item(a)])).toEqual(['stored'])
  })
})
