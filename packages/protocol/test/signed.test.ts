import { generateKeyPair } from '@libp2p/crypto/keys'
import type { PrivateKey } from '@libp2p/interface'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { RecordEnvelope } from '@libp2p/peer-record'
import { beforeAll, describe, expect, it } from 'vitest'
import { ENVELOPE_DOMAIN, ENVELOPE_PAYLOAD_TYPE } from '../src/constants.js'
import { InvalidSignatureError, MalformedMessageError } from '../src/errors.js'
import { libsodium, openssl, verifyOnThreadPool } from '../src/ed25519.js'
import { cachedSigners, openPayload, sealPayload, type SignatureCheck, signedBytes, SIGNER_CACHE_SIZE } from '../src/signed.js'
import { rejection } from './rejection.js'

// `sealPayload`/`openPayload` write and read Ed25519 envelopes directly, caching each signer's
// verification key: these tests pin that down against `RecordEnvelope` itself

const MAX = 1 << 20
let alice: PrivateKey
let mallory: PrivateKey

beforeAll(async () => {
  alice = await generateKeyPair('Ed25519')
  mallory = await generateKeyPair('Ed25519')
})

function payloadOf (length: number): Uint8Array {
  const bytes = new Uint8Array(length)
  for (let i = 0; i < length; i++) bytes[i] = (i * 31 + 7) & 0xff
  return bytes
}

/** What libp2p itself produces for the same record and key. */
async function libp2pSeal (payload: Uint8Array, key: PrivateKey, domain = ENVELOPE_DOMAIN, type = ENVELOPE_PAYLOAD_TYPE): Promise<Uint8Array> {
  const record = { domain, codec: type, marshal: () => payload, equals: () => false }
  return (await RecordEnvelope.seal(record, key)).marshal()
}

describe('sealPayload (Ed25519)', () => {
  it('gives exactly the bytes RecordEnvelope.seal().marshal() gives, at every length boundary', async () => {
    for (const length of [1, 2, 127, 128, 1000, 16_383, 16_384, 300_000]) {
      const payload = payloadOf(length)
      expect(await sealPayload(ENVELOPE_DOMAIN, ENVELOPE_PAYLOAD_TYPE, payload, alice, MAX)).toEqual(await libp2pSeal(payload, alice))
    }
  })

  it('signs what formatSignaturePayload describes: varint-prefixed domain, payload type and payload', () => {
    const bytes = signedBytes('d', Uint8Array.of(9, 9), Uint8Array.of(1, 2, 3))
    expect([...bytes]).toEqual([1, 'd'.charCodeAt(0), 2, 9, 9, 3, 1, 2, 3])
  })
})

describe('openPayload', () => {
  it('opens what libp2p sealed and names the signer', async () => {
    const sealed = await libp2pSeal(payloadOf(500), alice)
    const opened = await openPayload(sealed, ENVELOPE_DOMAIN, ENVELOPE_PAYLOAD_TYPE, MAX)
    expect(opened.payload).toEqual(payloadOf(500))
    expect(opened.signer).toBe(peerIdFromPrivateKey(alice).toString())
  })

  const checks: Array<[string, SignatureCheck | undefined]> = [
    ['the default', undefined],
    ['OpenSSL', openssl.verify],
    ['OpenSSL on the thread pool', verifyOnThreadPool],
    ['libsodium', libsodium()!.verify]
  ]
  it.each(checks)('still refuses a forged signature, a changed payload and another domain once the key is cached (%s)', async (_, check) => {
    const sealed = await sealPayload(ENVELOPE_DOMAIN, ENVELOPE_PAYLOAD_TYPE, payloadOf(200), alice, MAX)
    // cached now
    expect((await openPayload(sealed, ENVELOPE_DOMAIN, ENVELOPE_PAYLOAD_TYPE, MAX, check)).payload).toEqual(payloadOf(200))
    await openPayload(sealed, ENVELOPE_DOMAIN, ENVELOPE_PAYLOAD_TYPE, MAX, check)

    const badSignature = sealed.slice()
    badSignature[badSignature.length - 1] ^= 0x01
    expect(await rejection(openPayload(badSignature, ENVELOPE_DOMAIN, ENVELOPE_PAYLOAD_TYPE, MAX, check))).toBeInstanceOf(InvalidSignatureError)

    const badPayload = sealed.slice()
    badPayload[100] ^= 0x01
    expect(await rejection(openPayload(badPayload, ENVELOPE_DOMAIN, ENVELOPE_PAYLOAD_TYPE, MAX, check))).toBeInstanceOf(InvalidSignatureError)

    expect(await rejection(openPayload(sealed, 'persona-mesh/card', ENVELOPE_PAYLOAD_TYPE, MAX, check))).toBeInstanceOf(InvalidSignatureError)

    // mallory's signature over the same payload, with alice's key in the envelope
    const mallorys = await sealPayload(ENVELOPE_DOMAIN, ENVELOPE_PAYLOAD_TYPE, payloadOf(200), mallory, MAX)
    const spliced = sealed.slice()
    spliced.set(mallorys.subarray(mallorys.length - 64), spliced.length - 64)
    expect(await rejection(openPayload(spliced, ENVELOPE_DOMAIN, ENVELOPE_PAYLOAD_TYPE, MAX, check))).toBeInstanceOf(InvalidSignatureError)

    // and a key swapped in: the signature is alice's, the key mallory's
    const swapped = sealed.slice()
    swapped.set(mallory.publicKey.raw, 6)
    expect(await rejection(openPayload(swapped, ENVELOPE_DOMAIN, ENVELOPE_PAYLOAD_TYPE, MAX, check))).toBeInstanceOf(InvalidSignatureError)
  })

  it('refuses encodings RecordEnvelope would not produce, even with a valid signature', async () => {
    const payload = payloadOf(5)
    const sealed = await sealPayload(ENVELOPE_DOMAIN, ENVELOPE_PAYLOAD_TYPE, payload, alice, MAX)
    const typeEnd = 38 + 2 + ENVELOPE_PAYLOAD_TYPE.byteLength
    expect(sealed[typeEnd]).toBe(0x1a)
    expect(sealed[typeEnd + 1]).toBe(5)
    // the payload length in a longer varint than needed (0x85 0x00 is 5 too)
    const longVarint = new Uint8Array([...sealed.subarray(0, typeEnd + 1), 0x85, 0x00, ...sealed.subarray(typeEnd + 2)])
    const err = await rejection(openPayload(longVarint, ENVELOPE_DOMAIN, ENVELOPE_PAYLOAD_TYPE, MAX))
    expect(err).toBeInstanceOf(MalformedMessageError)
    expect(err.message).toMatch(/canonical/)
    // trailing bytes
    expect(await rejection(openPayload(new Uint8Array([...sealed, 0x50, 0x01]), ENVELOPE_DOMAIN, ENVELOPE_PAYLOAD_TYPE, MAX))).toBeInstanceOf(MalformedMessageError)
    // an empty payload written out (marshal leaves an empty field out)
    const emptySig = await alice.sign(signedBytes(ENVELOPE_DOMAIN, ENVELOPE_PAYLOAD_TYPE, new Uint8Array(0)))
    const empty = new Uint8Array([...sealed.subarray(0, typeEnd), 0x1a, 0x00, 0x2a, 0x40, ...emptySig])
    expect(await rejection(openPayload(empty, ENVELOPE_DOMAIN, ENVELOPE_PAYLOAD_TYPE, MAX))).toBeInstanceOf(MalformedMessageError)
  })

  it('takes other key types the general way', async () => {
    const secp = await generateKeyPair('secp256k1')
    const sealed = await sealPayload(ENVELOPE_DOMAIN, ENVELOPE_PAYLOAD_TYPE, payloadOf(300), secp, MAX)
    expect(sealed).toEqual(await libp2pSeal(payloadOf(300), secp))
    const opened = await openPayload(sealed, ENVELOPE_DOMAIN, ENVELOPE_PAYLOAD_TYPE, MAX)
    expect(opened.signer).toBe(peerIdFromPrivateKey(secp).toString())
    const tampered = sealed.slice()
    tampered[tampered.length - 1] ^= 0x01
    expect(await rejection(openPayload(tampered, ENVELOPE_DOMAIN, ENVELOPE_PAYLOAD_TYPE, MAX))).toBeInstanceOf(Error)
  })

  it('keeps at most SIGNER_CACHE_SIZE signers, and a key pushed out still verifies', async () => {
    const first = await generateKeyPair('Ed25519')
    const firstSealed = await sealPayload(ENVELOPE_DOMAIN, ENVELOPE_PAYLOAD_TYPE, payloadOf(10), first, MAX)
    await openPayload(firstSealed, ENVELOPE_DOMAIN, ENVELOPE_PAYLOAD_TYPE, MAX)
    for (let i = 0; i < SIGNER_CACHE_SIZE + 10; i++) {
      const key = await generateKeyPair('Ed25519')
      const sealed = await sealPayload(ENVELOPE_DOMAIN, ENVELOPE_PAYLOAD_TYPE, payloadOf(10), key, MAX)
      await openPayload(sealed, ENVELOPE_DOMAIN, ENVELOPE_PAYLOAD_TYPE, MAX)
    }
    expect(cachedSigners()).toBe(SIGNER_CACHE_SIZE)
    const again = await openPayload(firstSealed, ENVELOPE_DOMAIN, ENVELOPE_PAYLOAD_TYPE, MAX)
    expect(again.signer).toBe(peerIdFromPrivateKey(first).toString())
    const tampered = firstSealed.slice()
    tampered[tampered.length - 1] ^= 0x01
    expect(await rejection(openPayload(tampered, ENVELOPE_DOMAIN, ENVELOPE_PAYLOAD_TYPE, MAX))).toBeInstanceOf(InvalidSignatureError)
  })
})
