import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  CARD_DOMAIN,
  CARD_PAYLOAD_TYPE,
  CARDS_TOPIC,
  canonicalEncode,
  cardDhtKey,
  openCard,
  sealCard,
  sealPayload,
  WIRE_VERSION
} from '@persona-mesh/protocol'
import { TestMesh, waitFor } from './harness.js'
import type { PrivateKey } from '@libp2p/interface'
import type { MeshNode } from '@persona-mesh/node'
import type { Card } from '@persona-mesh/protocol'

function cardOf (key: PrivateKey, patch: Partial<Card> = {}): Card {
  const now = Date.now()
  return {
    v: WIRE_VERSION,
    peerId: peerIdFromPrivateKey(key).toString(),
    name: 'mallory',
    description: '',
    seq: now,
    issuedAt: now,
    expiresAt: now + 60_000,
    addrs: [],
    capabilities: [{ name: 'steal', description: '', tags: [] }],
    tools: [],
    topics: [],
    protocols: [],
    ...patch
  }
}

/** Sign any card-shaped value with any key, bypassing sealCard's checks. */
async function forge (value: unknown, key: PrivateKey, maxSize = 1024 * 1024): Promise<Uint8Array> {
  return sealPayload(CARD_DOMAIN, CARD_PAYLOAD_TYPE, canonicalEncode(value), key, maxSize)
}

describe('cards: bad input is never cached or shown', () => {
  const mesh = new TestMesh()
  let victim: MeshNode
  let attacker: MeshNode
  let mallory: PrivateKey
  let alice: PrivateKey

  beforeAll(async () => {
    victim = await mesh.node({ name: 'victim' })
    attacker = await mesh.node({ name: 'attacker' })
    mallory = await generateKeyPair('Ed25519')
    alice = await generateKeyPair('Ed25519')
    await attacker.dial(victim.multiaddrs[0]!)
    // both must see each other in the cards topic mesh before gossip flows
    await waitFor(() => victim.libp2p.services.pubsub.getSubscribers(CARDS_TOPIC).some(p => p.equals(attacker.libp2p.peerId)), 'victim sees attacker on the cards topic')
    await waitFor(() => attacker.libp2p.services.pubsub.getSubscribers(CARDS_TOPIC).some(p => p.equals(victim.libp2p.peerId)), 'attacker sees victim on the cards topic')
  })
  afterAll(async () => { await mesh.teardown() })

  it('verification refuses each kind of bad card with a typed error', async () => {
    const aliceId = peerIdFromPrivateKey(alice).toString()
    const forged = await forge(cardOf(mallory, { peerId: aliceId, name: 'alice' }), mallory)
    await expect(openCard(forged)).rejects.toMatchObject({ name: 'InvalidSignatureError' })

    const good = await sealCard(cardOf(alice, { name: 'alice' }), alice)
    const tampered = good.slice()
    const at = Buffer.from(tampered).indexOf(Buffer.from('alice'))
    tampered[at] = 'A'.charCodeAt(0)
    await expect(openCard(tampered)).rejects.toMatchObject({ name: 'InvalidSignatureError' })

    const expired = await forge(cardOf(alice, { issuedAt: 1000, expiresAt: 2000, name: 'alice' }), alice)
    await expect(openCard(expired)).rejects.toMatchObject({ name: 'ExpiredError' })

    const oversized = await forge(cardOf(alice, { description: 'x'.repeat(2000), tools: Array.from({ length: 64 }, (_, i) => ({ name: `t${i}`, description: 'y'.repeat(2000), inputSchema: {} })) }), alice)
    expect(oversized.byteLength).toBeGreaterThan(64 * 1024)
    await expect(openCard(oversized)).rejects.toMatchObject({ name: 'TooLargeError' })

    const malformed = await forge({ v: WIRE_VERSION, peerId: aliceId, name: 42 }, alice)
    await expect(openCard(malformed)).rejects.toMatchObject({ name: 'MalformedMessageError' })

    const future = await forge({ ...cardOf(alice), v: 2 }, alice)
    await expect(openCard(future)).rejects.toMatchObject({ name: 'UnsupportedVersionError' })
  })

  it('gossip: forged, tampered, expired, malformed and oversized cards are rejected; a replayed older seq is ignored', async () => {
    const aliceId = peerIdFromPrivateKey(alice).toString()
    const pubsub = attacker.libp2p.services.pubsub
    const scoreBefore = victim.libp2p.services.pubsub.getScore(attacker.peerId)

    const newer = await sealCard(cardOf(alice, { name: 'alice', seq: 2000, description: 'newer' }), alice)
    const older = await sealCard(cardOf(alice, { name: 'alice', seq: 1000, description: 'older' }), alice)
    await pubsub.publish(CARDS_TOPIC, newer)
    await waitFor(async () => (await victim.cards()).find(c => c.peerId === aliceId)?.seq === 2000, 'the honest card to arrive')

    const bad = [
      await forge(cardOf(mallory, { peerId: aliceId, name: 'alice', seq: 3000 }), mallory),
      await forge(cardOf(alice, { name: 'alice', seq: 3001, issuedAt: 1000, expiresAt: 2000 }), alice),
      await forge({ v: WIRE_VERSION, peerId: aliceId, name: 42 }, alice),
      new TextEncoder().encode('not even an envelope'),
      await forge(cardOf(alice, { seq: 3002, description: 'x'.repeat(2000), tools: Array.from({ length: 40 }, (_, i) => ({ name: `t${i}`, description: 'y'.repeat(2000), inputSchema: {} })) }), alice)
    ]
    for (const bytes of bad) await pubsub.publish(CARDS_TOPIC, bytes)
    await pubsub.publish(CARDS_TOPIC, older)
    // a later honest card from someone else marks the point by which the bad ones were processed
    const marker = await generateKeyPair('Ed25519')
    await pubsub.publish(CARDS_TOPIC, await sealCard(cardOf(marker, { name: 'marker' }), marker))
    await waitFor(async () => (await victim.cards()).some(c => c.name === 'marker'), 'the marker card')

    const held = (await victim.cards()).find(c => c.peerId === aliceId)!
    expect(held.seq).toBe(2000)
    expect(held.description).toBe('newer')
    expect((await victim.cards()).some(c => c.name === 'mallory' || c.name === 'alice' && c.seq !== 2000)).toBe(false)
    // Reject feeds gossipsub's scoring: the attacker's score dropped
    await waitFor(() => victim.libp2p.services.pubsub.getScore(attacker.peerId) < scoreBefore, 'the attacker to be penalised')
  })

  it('DHT: a card stored under another peer\'s key, or a forged one, fails the record validator; the selector prefers the highest seq', async () => {
    const validate = victim.libp2p.services.dht.validators.pmcard!
    const select = victim.libp2p.services.dht.selectors.pmcard!
    const aliceId = peerIdFromPrivateKey(alice).toString()
    const mallorysCard = await sealCard(cardOf(mallory), mallory)
    await expect(validate(cardDhtKey(aliceId), mallorysCard)).rejects.toMatchObject({ name: 'StaleRecordError' })
    const forged = await forge(cardOf(mallory, { peerId: aliceId }), mallory)
    await expect(validate(cardDhtKey(aliceId), forged)).rejects.toMatchObject({ name: 'InvalidSignatureError' })
    const v1 = await sealCard(cardOf(alice, { seq: 1 }), alice)
    const v2 = await sealCard(cardOf(alice, { seq: 2 }), alice)
    await expect(validate(cardDhtKey(aliceId), v2)).resolves.toBeUndefined()
    expect(await select(cardDhtKey(aliceId), [v1, forged, v2])).toBe(2)
  })

  it('the victim still serves honest peers afterwards', async () => {
    const honest = await mesh.node({ name: 'honest' })
    expect(await honest.request(victim.multiaddrs[0]!, 'mesh.echo', 'still here')).toBe('still here')
    await waitFor(async () => (await victim.cards()).some(c => c.name === 'honest'), 'the honest card')
  })
})
