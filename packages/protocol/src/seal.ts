import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { ENVELOPE_DOMAIN, ENVELOPE_PAYLOAD_TYPE, MAX_FRAME_SIZE, WIRE_VERSION } from './constants.js'
import { EnvelopeSchema, isPlainEnvelope } from './envelope.js'
import { ExpiredError, InvalidSignatureError, MalformedMessageError, UnsupportedVersionError } from './errors.js'
import { canonicalEncode, canonicalStringify, decodeUtf8, isCanonicalJsonText, parseBoundedJson, parseJson } from './json.js'
import { isBatchSealed, openBatch, sealBatch, storedBatchPayload } from './batch.js'
import { openPayload, type SignatureCheck, sealPayload, storedPayload } from './signed.js'
import type { MessageEnvelope } from './envelope.js'
import type { PrivateKey } from '@libp2p/interface'
import type { z } from 'zod'

export interface SealOptions {
  /** @default MAX_FRAME_SIZE */
  maxSize?: number
}

export interface OpenOptions {
  /** @default MAX_FRAME_SIZE */
  maxSize?: number
  /** Clock for the expiry check. @default Date.now() */
  now?: number
  /** Skip the expiry check (reading one's own stored envelopes). @default false */
  allowExpired?: boolean
  /**
   * How the signature is checked: by default synchronously, with the Ed25519 implementation in
   * use. A node receiving bursts (a delivery window) passes one that verifies them off the event loop.
   */
  checkSignature?: SignatureCheck
}

/** A verified envelope: the signature checks out and its signer is `envelope.from`. */
export interface OpenedEnvelope {
  envelope: MessageEnvelope
  /** The exact bytes that were verified, for storing and forwarding unchanged. */
  bytes: Uint8Array
}

/** Validate `frame` (already JSON-parsed) against `schema`, checking the wire version first. */
export function decodeVersioned<T extends z.ZodType> (schema: T, frame: unknown, what: string): z.infer<T> {
  if (typeof frame !== 'object' || frame === null || Array.isArray(frame)) {
    throw new MalformedMessageError(`${what} is not an object`)
  }
  const version = (frame as { v?: unknown }).v
  if (version !== WIRE_VERSION) {
    throw new UnsupportedVersionError(version, what)
  }
  const parsed = schema.safeParse(frame)
  if (!parsed.success) {
    const issue = parsed.error.issues[0]
    const where = issue?.path.length ? issue.path.join('.') : what
    throw new MalformedMessageError(`invalid ${what}: ${where}: ${issue?.message ?? 'invalid'}`)
  }
  return parsed.data
}

/** An envelope, validated: in place when it is certainly valid, else by the schema (which names the problem). */
function decodeEnvelope (frame: unknown): MessageEnvelope {
  return isPlainEnvelope(frame) ? frame : decodeVersioned(EnvelopeSchema, frame, 'envelope') as MessageEnvelope
}

/** The PeerId string of each signing key, derived once (base58 encoding costs as much as a small envelope's JSON). */
const keyOwners = new WeakMap<PrivateKey, string>()

function ownerOf (privateKey: PrivateKey): string {
  let owner = keyOwners.get(privateKey)
  if (owner === undefined) {
    owner = peerIdFromPrivateKey(privateKey).toString()
    keyOwners.set(privateKey, owner)
  }
  return owner
}

/**
 * Sign an envelope with its sender's key. The payload is the canonical encoding of the
 * envelope, so the same envelope always yields the same signed bytes.
 */
export async function sealEnvelope (envelope: MessageEnvelope, privateKey: PrivateKey, options: SealOptions = {}): Promise<Uint8Array> {
  const checked = decodeEnvelope(envelope)
  if (checked.from !== ownerOf(privateKey)) {
    throw new InvalidSignatureError('an envelope can only be sealed by the key of its sender (`from`)')
  }
  return sealPayload(ENVELOPE_DOMAIN, ENVELOPE_PAYLOAD_TYPE, canonicalEncode(envelope), privateKey, options.maxSize ?? MAX_FRAME_SIZE)
}

/**
 * Sign a burst of envelopes, all from the key's owner, in one go: two or more under an Ed25519
 * key are batch-sealed (one signature over the root of a Merkle tree of their payloads; each
 * sealed envelope carries its inclusion proof, ~100 bytes plus 32 for every doubling of the
 * batch, and verifies on its own), anything else is sealed one by one as {@link sealEnvelope}
 * does. Throws as {@link sealEnvelope} does, for the first envelope that cannot be sealed;
 * nothing is sealed then.
 */
export async function sealEnvelopes (envelopes: readonly MessageEnvelope[], privateKey: PrivateKey, options: SealOptions = {}): Promise<Uint8Array[]> {
  const maxSize = options.maxSize ?? MAX_FRAME_SIZE
  if (envelopes.length < 2 || privateKey.type !== 'Ed25519') {
    return await Promise.all(envelopes.map(async envelope => await sealEnvelope(envelope, privateKey, options)))
  }
  const owner = ownerOf(privateKey)
  const payloads = envelopes.map(envelope => {
    if (decodeEnvelope(envelope).from !== owner) {
      throw new InvalidSignatureError('an envelope can only be sealed by the key of its sender (`from`)')
    }
    return canonicalEncode(envelope)
  })
  return await sealBatch(ENVELOPE_PAYLOAD_TYPE, payloads, privateKey, maxSize)
}

/**
 * Verify and decode a sealed envelope, sealed alone or in a batch: size, signature (for a batch,
 * the inclusion proof and the root's signature), signer == `from`, version, schema, canonical
 * form, expiry.
 * Throws `TooLargeError`, `MalformedMessageError`, `InvalidSignatureError`,
 * `UnsupportedVersionError` or `ExpiredError`.
 */
export async function openEnvelope (bytes: Uint8Array, options: OpenOptions = {}): Promise<OpenedEnvelope> {
  const maxSize = options.maxSize ?? MAX_FRAME_SIZE
  const { payload, signer } = isBatchSealed(bytes)
    ? await openBatch(bytes, ENVELOPE_PAYLOAD_TYPE, maxSize, options.checkSignature)
    : await openPayload(bytes, ENVELOPE_DOMAIN, ENVELOPE_PAYLOAD_TYPE, maxSize, options.checkSignature)
  const text = decodeUtf8(payload)
  // canonical text (as every honest sender writes it) is known canonical without re-encoding it
  const canonical = payload[0] === 0x7b && isCanonicalJsonText(text)
  const envelope = decodeEnvelope(canonical ? parseBoundedJson(text) : parseJson(text))
  if (envelope.from !== signer) {
    throw new InvalidSignatureError(`envelope claims to be from ${envelope.from} but is signed by ${signer}`)
  }
  // what was signed must be exactly what we hand out: no duplicate keys (JSON.parse keeps the last),
  // no members the schema drops (`__proto__`), no alternative spellings of the same envelope.
  // Compared as text: strict UTF-8 decoding is one-to-one, except that it drops a leading BOM,
  // which the first byte rules out (canonical JSON of an object starts with `{`)
  if (!canonical && (payload[0] !== 0x7b || canonicalStringify(envelope) !== text)) {
    throw new MalformedMessageError('envelope payload is not in canonical form')
  }
  if (options.allowExpired !== true && envelope.expiresAt < (options.now ?? Date.now())) {
    throw new ExpiredError(`envelope ${envelope.id} expired at ${new Date(envelope.expiresAt).toISOString()}`)
  }
  return { envelope, bytes }
}

/**
 * The envelope in sealed bytes that {@link openEnvelope} accepted before they were stored (an
 * inbox keeps the bytes as received and reads the body back from them): decoded and validated,
 * with no signature or expiry check. Throws `MalformedMessageError` or `UnsupportedVersionError`.
 */
export function readStoredEnvelope (bytes: Uint8Array): MessageEnvelope {
  return decodeEnvelope(parseJson(isBatchSealed(bytes) ? storedBatchPayload(bytes) : storedPayload(bytes, ENVELOPE_PAYLOAD_TYPE)))
}
