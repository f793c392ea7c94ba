import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { TestMesh, waitFor } from './harness.js'
import type { MeshNode } from '@persona-mesh/node'

describe('discovery: 10 nodes joined through one bootstrap address (mDNS off)', () => {
  const mesh = new TestMesh()
  let boot: MeshNode
  const nodes: MeshNode[] = []

  beforeAll(async () => {
    boot = await mesh.node({ name: 'boot', card: { description: 'the first node' } })
    for (let i = 1; i < 10; i++) {
      nodes.push(await mesh.node({
        name: `n${i}`,
        bootstrap: [boot.multiaddrs[0]!],
        offlineAfter: 1000,
        card: {
          description: i === 9 ? 'translates French prose' : `worker ${i}`,
          capabilities: i === 9 ? [{ name: 'translate', tags: ['fr', 'prose'] }] : [{ name: 'generic', tags: [] }]
        }
      }))
    }
  })
  afterAll(async () => { await mesh.teardown() })

  it('every card reaches the bootstrap node, verified', async () => {
    await waitFor(async () => (await boot.cards()).length === 9, 'boot to hold 9 cards')
    const cards = await boot.cards()
    expect(new Set(cards.map(c => c.name))).toEqual(new Set(nodes.map(n => n.name)))
    const n9 = cards.find(c => c.name === 'n9')!
    expect(n9.peerId).toBe(nodes[8]!.peerId)
    expect(n9.capabilities[0]).toEqual({ name: 'translate', description: '', tags: ['fr', 'prose'] })
  })

  it('a node finds by capability, through DHT providers, a peer it never connected to', async () => {
    // a fresh node that only knows the bootstrap node
    const seeker = await mesh.node({ name: 'seeker', bootstrap: [boot.multiaddrs[0]!] })
    const translator = nodes[8]!
    expect(seeker.libp2p.getConnections(translator.libp2p.peerId)).toHaveLength(0)
    expect((await seeker.cards()).some(c => c.peerId === translator.peerId)).toBe(false)
    // until the DHT answers: on a loaded machine the card may reach the seeker by gossip first, and a
    // find whose DHT walk ran out of time then names it from the local index only
    const results = await waitFor(async () => {
      const found = await seeker.find('translate')
      return found.some(r => r.matched.includes('dht')) ? found : undefined
    }, 'find translate through the DHT', 30_000)
    expect(results[0]!.peerId).toBe(translator.peerId)
    expect(results[0]!.card.capabilities.map(c => c.name)).toContain('translate')
    expect(results[0]!.matched).toContain('dht')
  })

  it('a capability many peers offer: find hears of every provider from the DHT, up to its limit', async () => {
    const seeker = await mesh.node({ name: 'seeker2', bootstrap: [boot.multiaddrs[0]!] })
    const generic = nodes.slice(0, 8).map(n => n.peerId).sort()
    const results = await waitFor(async () => {
      const found = await seeker.find('generic')
      return found.filter(r => r.matched.includes('dht')).length === 8 ? found : undefined
    }, 'find generic to name all 8 providers through the DHT', 30_000)
    expect(results.map(r => r.peerId).sort()).toEqual(generic)
    const three = await seeker.find('generic', { limit: 3 })
    expect(three).toHaveLength(3)
    for (const r of three) expect(generic).toContain(r.peerId)
  })

  it('ranks free-text search over names, tags and descriptions, and resolves names', async () => {
    await waitFor(async () => (await boot.cards()).length >= 9, 'cards')
    const byTag = await boot.find('prose', { dht: false })
    expect(byTag.map(r => r.name)).toEqual(['n9'])
    const byDescription = await boot.find('french', { dht: false })
    expect(byDescription.map(r => r.name)).toEqual(['n9'])
    expect(await boot.find('nothing-matches-this', { dht: false })).toEqual([])
    expect(await boot.resolve('n9')).toBe(nodes[8]!.peerId)
    const missing = await boot.resolve('nobody').catch(e => e)
    expect(missing.name).toBe('NotFoundError')
    // a request addressed by persona name
    expect(await boot.request('n9', 'mesh.echo', 'by name')).toBe('by name')
  })

  it('a card update propagates: the new seq wins everywhere', async () => {
    const changed = nodes[3]!
    const before = await changed.card()
    const after = await changed.updateCard({ description: 'now reviews code', capabilities: ['review'] })
    expect(after.seq).toBeGreaterThan(before.seq)
    await waitFor(async () => (await boot.card(changed.peerId)).seq === after.seq, 'boot to hold the new card')
    const reviewers = await waitFor(async () => {
      const r = await boot.find('review', { dht: false })
      return r.length > 0 ? r : undefined
    }, 'find review')
    expect(reviewers[0]!.peerId).toBe(changed.peerId)
  })

  it('a stopped peer goes offline and comes back online', async () => {
    const watcher = boot
    const leaving = nodes[5]!
    await waitFor(async () => (await watcher.peers()).find(p => p.peerId === leaving.peerId)?.online, 'peer online')
    const offline: string[] = []
    const online: string[] = []
    watcher.addEventListener('peer:offline', (evt) => { offline.push(evt.detail.peerId) })
    watcher.addEventListener('peer:online', (evt) => { online.push(evt.detail.peerId) })
    const addr = leaving.multiaddrs[0]!
    await leaving.stop()
    await waitFor(() => offline.includes(leaving.peerId), 'peer:offline', 30_000)
    expect((await watcher.peers()).find(p => p.peerId === leaving.peerId)?.online).toBe(false)
    expect((await watcher.peers({ onlineOnly: true })).some(p => p.peerId === leaving.peerId)).toBe(false)

    await leaving.start()
    // it comes back on a new port; it re-announces itself through the bootstrap node
    await leaving.dial(watcher.multiaddrs[0]!)
    await waitFor(() => online.includes(leaving.peerId), 'peer:online again', 30_000)
    const info = (await watcher.peers()).find(p => p.peerId === leaving.peerId)!
    expect(info.online).toBe(true)
    expect(info.name).toBe(leaving.name)
    expect(addr).toBeDefined()
  })
})
