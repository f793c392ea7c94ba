import { afterEach, describe, expect, it } from 'vitest'
import { CAROL, envelope, item, TempStores } from './helpers.js'

const stores = new TempStores()
afterEach(async () => { await stores.cleanup() })

/**
 * The inbox looks a sender's seq up only when it is not above the highest seq stored from that
 * sender (committed, or earlier in the same round). These pin down that shortcut.
 */
describe('dedupe by sender + seq', () => {
  it('checks seqs below the highest (out of order), across calls, concurrent calls and a reopen', async () => {
    let store = await stores.open()
    expect(await store.inbox.accept([item(envelope({ seq: 10 })), item(envelope({ seq: 3 }))])).toEqual(['stored', 'stored'])
    // below the highest: looked up
    expect(await store.inbox.accept([item(envelope({ seq: 3 })), item(envelope({ seq: 4 })), item(envelope({ seq: 10 }))])).toEqual(['duplicate', 'stored', 'duplicate'])
    // concurrent calls (one round or consecutive rounds), the same seq in both: stored once
    const [a, b] = await Promise.all([
      store.inbox.accept([item(envelope({ seq: 11 })), item(envelope({ seq: 12 }))]),
      store.inbox.accept([item(envelope({ seq: 12 })), item(envelope({ seq: 11 })), item(envelope({ seq: 13 }))])
    ])
    expect([...a, ...b].filter(r => r === 'stored')).toHaveLength(3)
    expect(await store.inbox.highestSeq(envelope().from)).toBe(13)
    // another sender's seqs are its own
    expect(await store.inbox.accept([item(envelope({ from: CAROL, seq: 12 }))])).toEqual(['stored'])

    store = await stores.reopen(store)
    expect(await store.inbox.accept([item(envelope({ seq: 13 })), item(envelope({ seq: 5 })), item(envelope({ seq: 14 })), item(envelope({ seq: 14 }))]))
      .toEqual(['duplicate', 'stored', 'stored', 'duplicate'])
    expect(await store.inbox.highestSeq(envelope().from)).toBe(14)
    expect(await store.inbox.highestSeq(CAROL)).toBe(12)
    expect(store.inbox.unread()).toBe(9)
  })

  it('a seq whose dedupe key was pruned is accepted again; the highest seq stays', async () => {
    const store = await stores.open({ dedupeTtl: 1000 })
    const now = Date.now()
    expect(await store.inbox.accept([item(envelope({ seq: 7, createdAt: now, ttl: 10 }), { receivedAt: now })])).toEqual(['stored'])
    expect(await store.inbox.pruneDedupe(now + 2000)).toBe(2)
    expect(await store.inbox.accept([item(envelope({ seq: 7 }))])).toEqual(['stored'])
    expect(await store.inbox.accept([item(envelope({ seq: 7 }))])).toEqual(['duplicate'])
    expect(await store.inbox.highestSeq(envelope().from)).toBe(7)
  })
})
