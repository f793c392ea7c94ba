import { join } from 'node:path'
import { newId, newTrace } from '@persona-mesh/protocol'
import { afterEach, describe, expect, it } from 'vitest'
import { indexSub, jsonSub, openLevel, pad, SEP } from '../src/db.js'
import { InvalidRecordError } from '../src/index.js'
import type { AuditEvent, AuditQuery, MeshStore } from '../src/index.js'
import { BOB, CAROL, TempStores } from './helpers.js'

const stores = new TempStores()
afterEach(async () => { await stores.cleanup() })

async function all (store: MeshStore, q: AuditQuery, limit: number): Promise<AuditEvent[]> {
  const out: AuditEvent[] = []
  let cursor: string | undefined
  for (let pages = 0; pages < 10_000; pages++) {
    const page = await store.audit.query({ ...q, cursor, limit })
    out.push(...page.entries)
    cursor = page.nextCursor
    if (!page.more) return out
  }
  throw new Error('paging did not end')
}

/** Count the keys of a sublevel in a closed store's database. */
async function countKeys (path: string, name: string): Promise<number> {
  const db = openLevel(path)
  await db.open()
  try {
    return (await indexSub(db, name).keys().all()).length
  } finally {
    await db.close()
  }
}

describe('audit log blocks', () => {
  it('record() logs without a promise: every valid event is written, in order; an invalid one throws and is not', async () => {
    let store = await stores.open()
    const at = 1_700_000_000_000
    const events: AuditEvent[] = Array.from({ length: 300 }, (_, i) => ({ at: at + (i >> 7), kind: 'delivered', peer: i % 2 === 0 ? BOB : CAROL, id: `m${i}`, outcome: 'delivered' }))
    for (const [i, e] of events.entries()) {
      store.audit.record(e)
      if (i === 150) expect(() => { store.audit.record({ at, kind: '', outcome: 'x' }) }).toThrow(InvalidRecordError)
    }
    // written in the background; closing waits for it
    store = await stores.reopen(store)
    expect((await all(store, {}, 64)).map(e => e.id)).toEqual(events.map(e => e.id))
    expect((await all(store, { id: 'm7' }, 5)).map(e => e.peer)).toEqual([CAROL])
  })

  it('a burst at one time is stored as blocks, indexed once per distinct peer/trace/id, and pages through every event exactly once', async () => {
    const store = await stores.open()
    const at = 1_700_000_000_000
    // 600 deliveries in one turn (more than one block holds), alternating two peers, plus one send with a trace
    const trace = newTrace()
    const events: AuditEvent[] = Array.from({ length: 600 }, (_, i) => ({ at, kind: 'delivered', peer: i % 2 === 0 ? BOB : CAROL, id: `m${i}`, outcome: 'delivered' }))
    events.push({ at, kind: 'send', peer: BOB, trace, id: 'm0', outcome: 'queued' })
    await Promise.all(events.map(async e => { await store.audit.append([e]) }))

    for (const limit of [1, 7, 256, 1000]) {
      expect((await all(store, {}, limit)).map(e => e.id)).toEqual(events.map(e => e.id))
    }
    expect((await all(store, { peer: CAROL }, 9)).map(e => e.id)).toEqual(events.filter(e => e.peer === CAROL).map(e => e.id))
    expect((await all(store, { id: 'm0' }, 1)).map(e => e.kind)).toEqual(['delivered', 'send'])
    expect((await all(store, { trace }, 5)).map(e => e.kind)).toEqual(['send'])
    expect((await all(store, { peer: BOB, since: at, until: at + 1 }, 100))).toHaveLength(301)
    expect(await all(store, { since: at + 1 }, 100)).toEqual([])

    const path = store.path
    await store.close()
    // 3 blocks (256 + 256 + 89); per block each peer once and each id once (m0 is in the first and
    // the last), the trace once
    expect(await countKeys(path, 'au')).toBe(3)
    expect(await countKeys(path, 'aui')).toBe(3 * 2 + 601 + 1)
  })

  it('a cursor held across later appends resumes where it stopped; prune counts events and drops their index entries', async () => {
    const store = await stores.open()
    await store.audit.append([1, 2, 3].map(n => ({ at: 1000, kind: 'call', peer: BOB, id: `c${n}`, outcome: 'ok' })))
    const first = await store.audit.query({ peer: BOB, limit: 2 })
    expect(first.entries.map(e => e.id)).toEqual(['c1', 'c2'])
    await store.audit.append([{ at: 1000, kind: 'call', peer: BOB, id: 'c4', outcome: 'ok' }, { at: 2000, kind: 'call', peer: BOB, id: 'c5', outcome: 'ok' }])
    const rest = await store.audit.query({ peer: BOB, cursor: first.nextCursor })
    expect(rest.entries.map(e => e.id)).toEqual(['c3', 'c4', 'c5'])
    expect(rest.more).toBe(false)
    await expect(store.audit.query({ cursor: 'not a cursor!' })).rejects.toThrow(/cursor/)

    expect(await store.audit.prune(2000)).toBe(4)
    expect((await store.audit.query({ peer: BOB })).entries.map(e => e.id)).toEqual(['c5'])
    expect((await store.audit.query({ id: 'c1' })).entries).toEqual([])
  })

  it('reads events written one per record by the first layout, with their cursors', async () => {
    const dir = await stores.dir()
    const path = join(dir, 'db')
    const db = openLevel(path)
    await db.open()
    const au = jsonSub<AuditEvent>(db, 'au')
    const aui = indexSub(db, 'aui')
    const old: AuditEvent[] = [1, 2, 3].map(n => ({ at: 500 + n, kind: 'receive', peer: BOB, id: `r${n}`, outcome: 'stored' }))
    const ops: any[] = []
    for (const e of old) {
      const key = `${pad(e.at)}${SEP}${newId()}`
      ops.push({ type: 'put', sublevel: au, key, value: e })
      ops.push({ type: 'put', sublevel: aui, key: `p${SEP}${BOB}${SEP}${key}`, value: '' })
      ops.push({ type: 'put', sublevel: aui, key: `i${SEP}${e.id}${SEP}${key}`, value: '' })
    }
    await db.batch(ops)
    await db.close()

    const store = await stores.open({ path })
    await store.audit.append([{ at: 900, kind: 'receive', peer: BOB, id: 'r4', outcome: 'stored' }])
    expect((await all(store, { peer: BOB }, 1)).map(e => e.id)).toEqual(['r1', 'r2', 'r3', 'r4'])
    expect((await all(store, {}, 2)).map(e => e.id)).toEqual(['r1', 'r2', 'r3', 'r4'])
    expect((await store.audit.query({ id: 'r2' })).entries).toEqual([old[1]])
    expect(await store.audit.prune(10_000)).toBe(4)
    expect((await store.audit.query({})).entries).toEqual([])
  })
})
