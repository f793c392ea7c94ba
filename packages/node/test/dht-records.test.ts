import { CARD_PROTOCOL } from '@persona-mesh/protocol'
import { afterAll, describe, expect, it } from 'vitest'
import { TestMesh, waitFor } from './harness.js'
import type { MeshNode } from '@persona-mesh/node'

/** The parts of the card service this test looks into (private on the node). */
interface CardInternals {
  cards: Map<string, unknown>
  heldRecord(peerId: string): Promise<{ card: { peerId: string, seq: number } } | undefined>
}

const cardsOf = (node: MeshNode): CardInternals => (node as unknown as { cardService: CardInternals }).cardService

describe('card records a node holds for the DHT', () => {
  const mesh = new TestMesh()
  afterAll(async () => { await mesh.teardown() })

  it('are read from its own datastore, verified; newer ones replace older ones; absent ones are undefined', async () => {
    const boot = await mesh.node({ name: 'boot' })
    const holder = await mesh.node({ name: 'holder', bootstrap: [boot.multiaddrs[0]!] })
    const author = await mesh.node({ name: 'author', bootstrap: [boot.multiaddrs[0]!], card: { description: 'v1' } })
    const first = await waitFor(async () => await cardsOf(holder).heldRecord(author.peerId), 'holder to hold the author\'s card record')
    expect(first.card.peerId).toBe(author.peerId)

    await author.updateCard({ description: 'v2' })
    const seq = (await author.card()).seq
    await waitFor(async () => (await cardsOf(holder).heldRecord(author.peerId))?.card.seq === seq, 'the newer record')

    // a PeerId nobody published a record for
    expect(await cardsOf(holder).heldRecord(holder.peerId.replace(/.$/, c => c === 'a' ? 'b' : 'a'))).toBeUndefined()
  })

  it('find takes a provider\'s card from the record held here: no dial to the provider, no DHT get', async () => {
    const boot = await mesh.node({ name: 'boot2' })
    const seeker = await mesh.node({ name: 'seeker', bootstrap: [boot.multiaddrs[0]!] })
    const author = await mesh.node({ name: 'auditor', bootstrap: [boot.multiaddrs[0]!], card: { capabilities: [{ name: 'audit-ledgers', tags: [] }] } })
    await waitFor(async () => await cardsOf(seeker).heldRecord(author.peerId), 'seeker to hold the auditor\'s card record')
    await waitFor(async () => (await seeker.find('audit-ledgers'))[0]?.matched.includes('dht'), 'the auditor to be a DHT provider')

    // the auditor goes away and the seeker forgets its card: only the DHT knows of it now
    await author.stop()
    cardsOf(seeker).cards.delete(author.peerId)
    let gets = 0
    let cardDials = 0
    const dht = seeker.libp2p.services.dht
    const get = dht.get.bind(dht)
    dht.get = (...args) => { gets++; return get(...args) }
    const dialProtocol = seeker.libp2p.dialProtocol.bind(seeker.libp2p)
    seeker.libp2p.dialProtocol = async (peer, protocols, options) => {
      if ([protocols].flat().includes(CARD_PROTOCOL)) cardDials++
      return await dialProtocol(peer, protocols, options)
    }

    const results = await seeker.find('audit-ledgers')
    expect(results.map(r => r.peerId)).toEqual([author.peerId])
    expect(results[0]!.matched).toContain('dht')
    expect(results[0]!.card.capabilities.map(c => c.name)).toEqual(['audit-ledgers'])
    expect({ gets, cardDials }).toEqual({ gets: 0, cardDials: 0 })
  })
})
