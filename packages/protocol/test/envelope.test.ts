import { generateKeyPair } from '@libp2p/crypto/keys'
import type { PrivateKey } from '@libp2p/interface'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import type { MessageEnvelope } from '@persona-mesh/protocol'
import {
  canonicalEncode,
  createEnvelope,
  DEFAULT_MESSAGE_TTL_MS,
  ENVELOPE_DOMAIN,
  ENVELOPE_PAYLOAD_TYPE,
  ExpiredError,
  InvalidSignatureError,
  isUlid,
  MAX_FRAME_SIZE,
  MalformedMessageError,
  openEnvelope,
  openPayload,
  readStoredEnvelope,
  sealEnvelope,
  sealPayload,
  TooLargeError,
  TraceSchema,
  UnsupportedVersionError,
  WIRE_VERSION
} from '@persona-mesh/protocol'
import { beforeAll, describe, expect, it } from 'vitest'
import { rejection } from './rejection.js'

let alice: PrivateKey
let mallory: PrivateKey
let aliceId: string
let bobId: string

beforeAll(async () => {
  alice = await generateKeyPair('Ed25519')
  mallory = await generateKeyPair('Ed25519')
  aliceId = peerIdFromPrivateKey(alice).toString()
  bobId = peerIdFromPrivateKey(await generateKeyPair('Ed25519')).toString()
})

function envelope (overrides: Partial<MessageEnvelope> = {}): MessageEnvelope {
  return { ...createEnvelope({ from: aliceId, to: bobId, body: { text: 'hello bob', n: [1, 2, 3] }, seq: 1 }), ...overrides }
}

/** Seal arbitrary payload bytes (or a JSON value, canonically encoded) under the envelope domain, bypassing `sealEnvelope`'s checks. */
async function sealRaw (payload: unknown, key: PrivateKey = alice, domain = ENVELOPE_DOMAIN, type = ENVELOPE_PAYLOAD_TYPE): Promise<Uint8Array> {
  const bytes = payload instanceof Uint8Array ? payload : canonicalEncode(payload)
  return sealPayload(domain, type, bytes, key, MAX_FRAME_SIZE)
}

async function expectRejects (promise: Promise<unknown>, type: new (...args: any[]) => Error, message?: RegExp): Promise<Error> {
  const err = await rejection(promise)
  expect(err).toBeInstanceOf(type)
  expect(err.name).toBe(type.name)
  if (message !== undefined) expect(err.message).toMatch(message)
  return err
}

function indexOf (haystack: Uint8Array, needle: Uint8Array): number {
  outer: for (let i = 0; i + needle.length <= haystack.length; i++) {
    for (let j = 0; j < needle.length; j++) if (haystack[i + j] !== needle[j]) continue outer
    return i
  }
  return -1
}

describe('createEnvelope', () => {
  it('fills in the defaults', () => {
    const before = Date.now()
    const e = createEnvelope({ from: aliceId, to: bobId, body: null, seq: 7 })
    const after = Date.now()
    expect(e.v).toBe(WIRE_VERSION)
    expect(isUlid(e.id)).toBe(true)
    expect(e.kind).toBe('message')
    expect(e.from).toBe(aliceId)
    expect(e.to).toBe(bobId)
    expect(e.seq).toBe(7)
    expect(e.hop).toBe(0)
    expect(e.priority).toBe('normal')
    expect(TraceSchema.safeParse(e.trace).success).toBe(true)
    expect(e.createdAt).toBeGreaterThanOrEqual(before)
    expect(e.createdAt).toBeLessThanOrEqual(after)
    expect(e.expiresAt).toBe(e.createdAt + DEFAULT_MESSAGE_TTL_MS)
    expect(e.body).toBeNull()
    expect('thread' in e).toBe(false)
    expect('replyTo' in e).toBe(false)
  })

  it('keeps what it is given', () => {
    const replyTo = createEnvelope({ from: bobId, to: aliceId, body: 1, seq: 1 }).id
    const e = createEnvelope({
      from: aliceId,
      to: bobId,
      body: [1],
      seq: 2,
      kind: 'request',
      id: '01ARZ3NDEKTSV4RRFFQ69G5FAV',
      thread: 'th-1',
      replyTo,
      trace: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01',
      hop: 3,
      priority: 'high',
      createdAt: 1_000,
      ttl: 500
    })
    expect(e).toEqual({
      v: 1,
      id: '01ARZ3NDEKTSV4RRFFQ69G5FAV',
      kind: 'request',
      from: aliceId,
      to: bobId,
      thread: 'th-1',
      replyTo,
      trace: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01',
      hop: 3,
      priority: 'high',
      seq: 2,
      createdAt: 1_000,
      expiresAt: 1_500,
      body: [1]
    })
  })

  it('gives every envelope a new, increasing id and a new trace', () => {
    const ids = Array.from({ length: 100 }, () => envelope().id)
    expect([...ids].sort()).toEqual(ids)
    expect(new Set(ids).size).toBe(100)
    expect(envelope().trace).not.toBe(envelope().trace)
  })
})

describe('sealEnvelope / openEnvelope', () => {
  it('round-trips, and hands back exactly the bytes it verified', async () => {
    const e = envelope({ thread: 't', body: { nested: { list: [true, null, 'x', -1.5] } } })
    const sealed = await sealEnvelope(e, alice)
    const opened = await openEnvelope(sealed)
    expect(opened.envelope).toEqual(e)
    expect(opened.bytes).toEqual(sealed)
  })

  it('is deterministic: sealing the same envelope twice, keys in any order, gives identical bytes', async () => {
    const e = envelope()
    const reordered = Object.fromEntries(Object.entries(e).reverse()) as MessageEnvelope
    const first = await sealEnvelope(e, alice)
    expect(await sealEnvelope(e, alice)).toEqual(first)
    expect(await sealEnvelope(reordered, alice)).toEqual(first)
    // and the signed payload is the canonical encoding of the envelope
    expect(indexOf(first, canonicalEncode(e))).toBeGreaterThan(0)
  })

  it('refuses to seal an envelope whose `from` is not the signing key', async () => {
    await expectRejects(sealEnvelope(envelope(), mallory), InvalidSignatureError, /sender/)
  })

  it('refuses an envelope signed by X that claims to be from Z', async () => {
    // mallory signs under the right domain and payload type, with alice in `from`
    const forged = await sealRaw(envelope(), mallory)
    await expectRejects(openEnvelope(forged), InvalidSignatureError, /claims to be from/)
  })

  it('reads an envelope back from stored bytes without verifying them', async () => {
    const e = envelope({ body: { stored: ['once'] } })
    expect(readStoredEnvelope(await sealEnvelope(e, alice))).toEqual(e)
    // the general layout too (a key other than Ed25519)
    const secp = await generateKeyPair('secp256k1')
    const fromSecp = envelope({ from: peerIdFromPrivateKey(secp).toString() })
    expect(readStoredEnvelope(await sealEnvelope(fromSecp, secp))).toEqual(fromSecp)
    // no signature check: that was done before the bytes were stored
    expect(readStoredEnvelope(await sealRaw(e, mallory))).toEqual(e)
    expect(() => readStoredEnvelope(new Uint8Array([1, 2, 3]))).toThrow(MalformedMessageError)
    expect(() => readStoredEnvelope(new Uint8Array(0))).toThrow(MalformedMessageError)
    const otherType = await sealRaw(e, alice, ENVELOPE_DOMAIN, new TextEncoder().encode('/other/1'))
    expect(() => readStoredEnvelope(otherType)).toThrow(/payload type/)
    const notJson = await sealRaw(new TextEncoder().encode('not json'))
    expect(() => readStoredEnvelope(notJson)).toThrow(MalformedMessageError)
  })

  describe('tampered bytes', () => {
    // the payload is one length-delimited protobuf field: changing a byte inside it keeps the
    // framing intact, so decoding succeeds and the signature check fails; the signature is
    // checked before the JSON is parsed, so even a byte that breaks the JSON is a signature error
    it('a changed payload byte that keeps valid JSON is InvalidSignatureError', async () => {
      const sealed = await sealEnvelope(envelope(), alice)
      const at = indexOf(sealed, new TextEncoder().encode('hello bob'))
      expect(at).toBeGreaterThan(0)
      const tampered = sealed.slice()
      tampered[at] = 'j'.charCodeAt(0) // "jello bob"
      await expectRejects(openEnvelope(tampered), InvalidSignatureError, /does not verify/)
    })

    it('a payload byte turned into invalid UTF-8 is still InvalidSignatureError', async () => {
      const sealed = await sealEnvelope(envelope(), alice)
      const tampered = sealed.slice()
      tampered[indexOf(sealed, new TextEncoder().encode('hello bob'))] = 0xff
      await expectRejects(openEnvelope(tampered), InvalidSignatureError)
    })

    it('a changed signature byte is InvalidSignatureError', async () => {
      const sealed = await sealEnvelope(envelope(), alice)
      const tampered = sealed.slice()
      tampered[tampered.length - 1] ^= 0x01 // the signature is the last field
      await expectRejects(openEnvelope(tampered), InvalidSignatureError)
    })

    it('broken protobuf framing is MalformedMessageError', async () => {
      const sealed = await sealEnvelope(envelope(), alice)
      const badTag = sealed.slice()
      badTag[0] = 0xff // wire type 7 does not exist
      await expectRejects(openEnvelope(badTag), MalformedMessageError, /not a signed envelope/)
      await expectRejects(openEnvelope(sealed.subarray(0, sealed.length - 1)), MalformedMessageError)
      await expectRejects(openEnvelope(new Uint8Array(0)), MalformedMessageError)
      await expectRejects(openEnvelope(new TextEncoder().encode('{"v":1}')), MalformedMessageError)
    })

    it('extra bytes outside the signed fields are MalformedMessageError, so the bytes passed on are exactly the signed ones', async () => {
      const sealed = await sealEnvelope(envelope(), alice)
      // field 10, varint 1: protobuf skips unknown fields, so without a canonical check this opened
      // fine and `bytes` carried two unsigned bytes along
      const padded = new Uint8Array([...sealed, 0x50, 0x01])
      await expectRejects(openEnvelope(padded), MalformedMessageError, /canonical/)
    })

    it('a different payload type is MalformedMessageError', async () => {
      const other = await sealRaw(envelope(), alice, ENVELOPE_DOMAIN, new TextEncoder().encode('/persona-mesh/card/1'))
      await expectRejects(openEnvelope(other), MalformedMessageError, /payload type/)
    })
  })

  it('does not accept a signature made in another domain', async () => {
    const e = envelope()
    const otherDomain = await sealRaw(e, alice, 'persona-mesh/card')
    await expectRejects(openEnvelope(otherDomain), InvalidSignatureError, /does not verify/)
    // and ours does not verify anywhere else
    const ours = await sealEnvelope(e, alice)
    await expectRejects(openPayload(ours, 'persona-mesh/card', ENVELOPE_PAYLOAD_TYPE, MAX_FRAME_SIZE), InvalidSignatureError)
    expect((await openPayload(ours, ENVELOPE_DOMAIN, ENVELOPE_PAYLOAD_TYPE, MAX_FRAME_SIZE)).signer).toBe(aliceId)
  })

  describe('expiry', () => {
    it('an expired envelope is ExpiredError, unless allowExpired', async () => {
      const e = envelope({ createdAt: Date.now() - 2_000, expiresAt: Date.now() - 1_000 })
      const sealed = await sealEnvelope(e, alice)
      await expectRejects(openEnvelope(sealed), ExpiredError, new RegExp(e.id))
      expect((await openEnvelope(sealed, { allowExpired: true })).envelope).toEqual(e)
    })

    it('expires after expiresAt, not at it', async () => {
      const e = envelope({ createdAt: 1_000, expiresAt: 2_000 })
      const sealed = await sealEnvelope(e, alice)
      expect((await openEnvelope(sealed, { now: 2_000 })).envelope.id).toBe(e.id)
      await expectRejects(openEnvelope(sealed, { now: 2_001 }), ExpiredError)
    })
  })

  describe('versions', () => {
    it('an unknown `v` is UnsupportedVersionError, when sealing and when opening', async () => {
      const e = { ...envelope(), v: 2 } as unknown as MessageEnvelope
      const sealErr = await expectRejects(sealEnvelope(e, alice), UnsupportedVersionError)
      expect((sealErr as UnsupportedVersionError).version).toBe(2)
      const openErr = await expectRejects(openEnvelope(await sealRaw(e)), UnsupportedVersionError)
      expect((openErr as UnsupportedVersionError).version).toBe(2)
    })

    it('a missing `v` is UnsupportedVersionError too', async () => {
      const { v: _, ...rest } = envelope()
      const err = await expectRejects(openEnvelope(await sealRaw(rest)), UnsupportedVersionError)
      expect((err as UnsupportedVersionError).version).toBeUndefined()
    })
  })

  describe('schema', () => {
    const cases: Array<[string, (e: MessageEnvelope) => unknown]> = [
      ['hop as a string', e => ({ ...e, hop: '0' })],
      ['hop over 255', e => ({ ...e, hop: 256 })],
      ['an unknown priority', e => ({ ...e, priority: 'urgent' })],
      ['an unknown kind', e => ({ ...e, kind: 'shout' })],
      ['an id that is not a ULID', e => ({ ...e, id: 'not-a-ulid-not-a-ulid-1234' })],
      ['a from that is not a PeerId', e => ({ ...e, from: 'alice' })],
      ['an empty to', e => ({ ...e, to: '' })],
      ['a negative seq', e => ({ ...e, seq: -1 })],
      ['a fractional createdAt', e => ({ ...e, createdAt: 1.5 })],
      ['expiresAt before createdAt', e => ({ ...e, expiresAt: e.createdAt - 1 })],
      ['a bad trace', e => ({ ...e, trace: '00-00000000000000000000000000000000-b7ad6b7169203331-01' })],
      ['an extra field', e => ({ ...e, extra: 1 })],
      ['a missing field', ({ to: _, ...rest }) => rest],
      ['a missing body', ({ body: _, ...rest }) => rest]
    ]

    it.each(cases)('%s is MalformedMessageError when sealing', async (_, mutate) => {
      await expectRejects(sealEnvelope(mutate(envelope()) as MessageEnvelope, alice), MalformedMessageError, /invalid envelope/)
    })

    it.each(cases)('%s is MalformedMessageError when opening', async (_, mutate) => {
      await expectRejects(openEnvelope(await sealRaw(mutate(envelope()))), MalformedMessageError, /invalid envelope/)
    })

    it.each([
      ['an array', [1, 2]],
      ['a string', 'envelope'],
      ['null', null]
    ])('a payload that is %s is MalformedMessageError', async (_, payload) => {
      await expectRejects(openEnvelope(await sealRaw(payload)), MalformedMessageError, /not an object/)
    })

    it('a payload that is not JSON, or not UTF-8, or too deep, is MalformedMessageError', async () => {
      await expectRejects(openEnvelope(await sealRaw(new TextEncoder().encode('{"v":1,'))), MalformedMessageError, /not valid JSON/)
      await expectRejects(openEnvelope(await sealRaw(new Uint8Array([0x7b, 0xff, 0x7d]))), MalformedMessageError, /UTF-8/)
      await expectRejects(openEnvelope(await sealRaw(new TextEncoder().encode('['.repeat(100_000)))), MalformedMessageError, /deeper/)
    })
  })

  describe('canonical form', () => {
    it('a payload that is valid but not canonical is MalformedMessageError', async () => {
      const e = envelope()
      const pretty = new TextEncoder().encode(JSON.stringify(e, null, 2))
      await expectRejects(openEnvelope(await sealRaw(pretty)), MalformedMessageError, /canonical/)
    })

    it('a duplicated key (JSON.parse keeps the last one) is MalformedMessageError', async () => {
      const e = envelope()
      const canonical = new TextDecoder().decode(canonicalEncode(e))
      const duplicated = canonical.replace('"body":{', '"body":{"text":"first",')
      expect(duplicated).not.toBe(canonical)
      await expectRejects(openEnvelope(await sealRaw(new TextEncoder().encode(duplicated))), MalformedMessageError, /canonical/)
    })

    it('a "__proto__" member in the body is refused, not silently dropped', async () => {
      const body = JSON.parse('{"__proto__":{"admin":true},"text":"hi"}')
      await expectRejects(sealEnvelope(envelope({ body }), alice), MalformedMessageError, /__proto__/)
      const canonical = new TextDecoder().decode(canonicalEncode(envelope({ body: { text: 'hi' } })))
      const sneaky = canonical.replace('"body":{', '"body":{"__proto__":{"admin":true},')
      await expectRejects(openEnvelope(await sealRaw(new TextEncoder().encode(sneaky))), MalformedMessageError, /canonical|__proto__/)
    })
  })

  describe('size', () => {
    it('refuses to seal more than maxSize', async () => {
      const err = await expectRejects(sealEnvelope(envelope({ body: 'x'.repeat(MAX_FRAME_SIZE) }), alice), TooLargeError)
      expect((err as TooLargeError).limit).toBe(MAX_FRAME_SIZE)
      expect((err as TooLargeError).size).toBeGreaterThan(MAX_FRAME_SIZE)
      const small = await expectRejects(sealEnvelope(envelope(), alice, { maxSize: 100 }), TooLargeError)
      expect((small as TooLargeError).limit).toBe(100)
    })

    it('refuses to open more than maxSize, before looking inside', async () => {
      const sealed = await sealEnvelope(envelope(), alice)
      const err = await expectRejects(openEnvelope(sealed, { maxSize: sealed.length - 1 }), TooLargeError)
      expect((err as TooLargeError).size).toBe(sealed.length)
      expect((err as TooLargeError).limit).toBe(sealed.length - 1)
      expect((await openEnvelope(sealed, { maxSize: sealed.length })).bytes).toEqual(sealed)
      // the size check comes first: garbage over the limit is TooLargeError, not MalformedMessageError
      await expectRejects(openEnvelope(new Uint8Array(MAX_FRAME_SIZE + 1)), TooLargeError)
    })
  })
})
