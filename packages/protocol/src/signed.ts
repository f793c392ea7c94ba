import { publicKeyFromRaw } from '@libp2p/crypto/keys'
import { peerIdFromPublicKey } from '@libp2p/peer-id'
import { RecordEnvelope } from '@libp2p/peer-record'
import { equals as bytesEqual } from 'uint8arrays/equals'
import { ed25519, SIGNATURE_LENGTH } from './ed25519.js'
import { InvalidSignatureError, MalformedMessageError, TooLargeError } from './errors.js'
import { bytesKey, Lru } from './lru.js'
import type { PrivateKey, Record } from '@libp2p/interface'

/** A signed payload as it came off the wire, with the PeerId that signed it. */
export interface OpenedPayload {
  payload: Uint8Array
  signer: string
}

/** Raw bytes wrapped as a libp2p `Record` so `RecordEnvelope` can seal them under our domain. */
class PayloadRecord implements Record {
  constructor (readonly domain: string, readonly codec: Uint8Array, private readonly bytes: Uint8Array) {}

  marshal (): Uint8Array {
    return this.bytes
  }

  equals (other: unknown): boolean {
    return other instanceof PayloadRecord && other.domain === this.domain && bytesEqual(other.bytes, this.bytes)
  }
}

/*
 * Ed25519 envelopes, the only kind Persona Mesh keys make, take a fast path on both ends that
 * produces and accepts exactly the bytes `RecordEnvelope` does:
 *
 * - the signed bytes are libp2p's: varint(len(domain)) domain varint(len(type)) type
 *   varint(len(payload)) payload;
 * - the marshalled envelope is the protobuf `RecordEnvelope.marshal()` writes: field 1 the public
 *   key (`08 01 12 20` + 32 key bytes), 2 the payload type, 3 the payload, 5 the 64-byte signature;
 *   nothing else, every length in its shortest form. Bytes in any other layout go the general
 *   way, which accepts only what re-marshals to the same bytes: the fast path accepts a subset of
 *   what it accepts, and verifies each one over the same bytes, with libsodium where it loads
 *   (see `ed25519.ts`: it also refuses the few degenerate keys and signatures OpenSSL lets by).
 *
 * What it saves: libp2p imports the public key (JWK → KeyObject) on every verification, and the
 * signer's PeerId is re-derived and base58-encoded for every envelope. Both are done once per key.
 */
const ED25519_PUBLIC_KEY_PB = Uint8Array.of(0x08, 0x01, 0x12, 0x20)
const ED25519_KEY_LENGTH = 32
/** Field 1 (public key, 36 bytes), then the key's own protobuf header. */
const KEY_FIELD = Uint8Array.of(0x0a, 0x24, ...ED25519_PUBLIC_KEY_PB)
const KEY_FIELD_END = KEY_FIELD.byteLength + ED25519_KEY_LENGTH

/** Bytes of an unsigned varint (lengths: below 2^31). */
function varintLength (n: number): number {
  let bytes = 1
  while (n >= 0x80) {
    n >>>= 7
    bytes++
  }
  return bytes
}

/** Write `n` as an unsigned varint at `at`; returns the position after it. */
function writeVarint (n: number, out: Uint8Array, at: number): number {
  while (n >= 0x80) {
    out[at++] = (n & 0x7f) | 0x80
    n >>>= 7
  }
  out[at++] = n
  return at
}

const utf8 = new TextEncoder()
const domainBytes = new Map<string, Uint8Array>()

function encodeDomain (domain: string): Uint8Array {
  let bytes = domainBytes.get(domain)
  if (bytes === undefined) {
    bytes = utf8.encode(domain)
    // domains are a handful of constants; anything beyond that is not worth keeping
    if (domainBytes.size < 16) domainBytes.set(domain, bytes)
  }
  return bytes
}

/** What an Ed25519 signature covers (`formatSignaturePayload` of `@libp2p/peer-record`). */
export function signedBytes (domain: string, payloadType: Uint8Array, payload: Uint8Array): Uint8Array {
  const d = encodeDomain(domain)
  const out = new Uint8Array(varintLength(d.byteLength) + d.byteLength + varintLength(payloadType.byteLength) +
    payloadType.byteLength + varintLength(payload.byteLength) + payload.byteLength)
  let at = writeVarint(d.byteLength, out, 0)
  out.set(d, at)
  at = writeVarint(payloadType.byteLength, out, at + d.byteLength)
  out.set(payloadType, at)
  at = writeVarint(payload.byteLength, out, at + payloadType.byteLength)
  out.set(payload, at)
  return out
}

/** Most signers whose PeerId is kept. */
export const SIGNER_CACHE_SIZE = 1024
const signers = new Lru<string>(SIGNER_CACHE_SIZE)

/** The PeerId string of an Ed25519 public key (raw), derived once per key. */
export function signerOf (raw: Uint8Array): string {
  return signers.getOr(bytesKey(raw), () => peerIdFromPublicKey(publicKeyFromRaw(Uint8Array.from(raw))).toString())
}

/** How many signers' PeerIds are cached (tests). */
export function cachedSigners (): number {
  return signers.size
}

/**
 * Checks one Ed25519 signature (raw 32-byte public key, 64-byte signature); by default the
 * synchronous {@link ed25519} in use. A node verifying bursts passes one that batches them off the
 * event loop.
 */
export type SignatureCheck = (message: Uint8Array, publicKey: Uint8Array, signature: Uint8Array) => boolean | Promise<boolean>

/** The parts of an envelope in exactly the layout `RecordEnvelope.marshal()` gives an Ed25519 key; `undefined` otherwise. */
function parseEd25519 (data: Uint8Array, payloadType: Uint8Array): { key: Uint8Array, payload: Uint8Array, signature: Uint8Array } | undefined {
  const end = data.byteLength
  if (end < KEY_FIELD_END) return undefined
  for (let i = 0; i < KEY_FIELD.byteLength; i++) if (data[i] !== KEY_FIELD[i]) return undefined
  let at = KEY_FIELD_END
  const typeLength = payloadType.byteLength
  if (typeLength === 0 || typeLength > 127 || data[at] !== 0x12 || data[at + 1] !== typeLength) return undefined
  at += 2
  for (let i = 0; i < typeLength; i++) if (data[at + i] !== payloadType[i]) return undefined
  at += typeLength
  if (data[at++] !== 0x1a) return undefined
  // the payload length: a varint in its shortest form, not zero (marshal leaves an empty field out)
  let length = 0
  let shift = 1
  const start = at
  for (;;) {
    if (at >= end || at - start >= 5) return undefined
    const b = data[at++]!
    length += (b & 0x7f) * shift
    shift *= 128
    if (b < 0x80) {
      if (b === 0 && at - start > 1) return undefined
      break
    }
  }
  if (length === 0 || at + length + 2 + SIGNATURE_LENGTH !== end) return undefined
  const payload = data.subarray(at, at + length)
  at += length
  if (data[at] !== 0x2a || data[at + 1] !== SIGNATURE_LENGTH) return undefined
  return { key: data.subarray(6, KEY_FIELD_END), payload, signature: data.subarray(at + 2, end) }
}

/**
 * The payload of a sealed envelope, unverified: for bytes that were verified when they arrived
 * and are read back from a node's own store. Throws `MalformedMessageError` if they do not decode.
 */
export function storedPayload (data: Uint8Array, payloadType: Uint8Array): Uint8Array {
  return parseEd25519(data, payloadType)?.payload ?? decodeGeneral(data, payloadType, false).payload
}

/**
 * A sealed envelope in the general (protobuf) layout, with the expected payload type. `exact`
 * refuses every encoding but the one we produce: protobuf tolerates unknown fields, repeated
 * fields and long varints, and bytes handed on must be exactly the bytes that were signed.
 */
function decodeGeneral (data: Uint8Array, payloadType: Uint8Array, exact: boolean): RecordEnvelope {
  let envelope: RecordEnvelope
  try {
    envelope = RecordEnvelope.createFromProtobuf(data)
  } catch (err) {
    throw new MalformedMessageError(`not a signed envelope: ${(err as Error).message}`)
  }
  if (exact && !bytesEqual(envelope.marshal(), data)) {
    throw new MalformedMessageError('signed envelope is not in canonical form')
  }
  if (!bytesEqual(envelope.payloadType, payloadType)) {
    throw new MalformedMessageError('signed envelope carries an unexpected payload type')
  }
  return envelope
}

/** Sign `payload` under `domain` (a signature is valid only in its domain) and marshal the envelope. */
export async function sealPayload (domain: string, payloadType: Uint8Array, payload: Uint8Array, privateKey: PrivateKey, maxSize: number): Promise<Uint8Array> {
  const bytes = isEd25519(privateKey) && payload.byteLength > 0 && payloadType.byteLength > 0 && payloadType.byteLength < 128
    ? await sealEd25519(domain, payloadType, payload, privateKey)
    : (await RecordEnvelope.seal(new PayloadRecord(domain, payloadType, payload), privateKey)).marshal()
  if (bytes.byteLength > maxSize) {
    throw new TooLargeError(bytes.byteLength, maxSize, 'sealed payload')
  }
  return bytes
}

function isEd25519 (privateKey: PrivateKey): boolean {
  return privateKey.type === 'Ed25519' && privateKey.publicKey.raw.byteLength === ED25519_KEY_LENGTH
}

/** `RecordEnvelope.seal(…).marshal()` for an Ed25519 key, written directly. */
async function sealEd25519 (domain: string, payloadType: Uint8Array, payload: Uint8Array, privateKey: PrivateKey): Promise<Uint8Array> {
  const signature = await privateKey.sign(signedBytes(domain, payloadType, payload))
  if (signature.byteLength !== SIGNATURE_LENGTH) throw new InvalidSignatureError('an Ed25519 signature must be 64 bytes')
  const lengthBytes = varintLength(payload.byteLength)
  const out = new Uint8Array(KEY_FIELD_END + 2 + payloadType.byteLength + 1 + lengthBytes + payload.byteLength + 2 + SIGNATURE_LENGTH)
  out.set(KEY_FIELD, 0)
  out.set(privateKey.publicKey.raw, KEY_FIELD.byteLength)
  let at = KEY_FIELD_END
  out[at++] = 0x12
  out[at++] = payloadType.byteLength
  out.set(payloadType, at)
  at += payloadType.byteLength
  out[at++] = 0x1a
  at = writeVarint(payload.byteLength, out, at)
  out.set(payload, at)
  at += payload.byteLength
  out[at++] = 0x2a
  out[at++] = SIGNATURE_LENGTH
  out.set(signature, at)
  return out
}

/** Check size, envelope framing, payload type and signature; return the payload and its signer. */
export async function openPayload (data: Uint8Array, domain: string, payloadType: Uint8Array, maxSize: number, check?: SignatureCheck): Promise<OpenedPayload> {
  if (data.byteLength > maxSize) {
    throw new TooLargeError(data.byteLength, maxSize, 'sealed payload')
  }
  const parts = parseEd25519(data, payloadType)
  if (parts !== undefined) {
    let signer: string | undefined
    let valid = false
    try {
      signer = signerOf(parts.key)
      const signed = signedBytes(domain, payloadType, parts.payload)
      valid = check === undefined ? ed25519().verify(signed, parts.key, parts.signature) : await check(signed, parts.key, parts.signature)
    } catch {
      valid = false
    }
    if (!valid || signer === undefined) {
      throw new InvalidSignatureError('signature does not verify')
    }
    return { payload: parts.payload, signer }
  }
  const envelope = decodeGeneral(data, payloadType, true)
  let valid = false
  try {
    valid = await envelope.validate(domain)
  } catch {
    valid = false
  }
  if (!valid) {
    throw new InvalidSignatureError('signature does not verify')
  }
  return { payload: envelope.payload, signer: peerIdFromPublicKey(envelope.publicKey).toString() }
}
