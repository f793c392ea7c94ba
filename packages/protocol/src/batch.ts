import { ed25519, PUBLIC_KEY_LENGTH, SIGNATURE_LENGTH } from './ed25519.js'
import { InvalidSignatureError, MalformedMessageError, TooLargeError } from './errors.js'
import { bytesKey, Lru } from './lru.js'
import { HASH_LENGTH, leafHash, merkleTree, proofShape, rootFromProof } from './merkle.js'
import { type OpenedPayload, type SignatureCheck, signedBytes, signerOf } from './signed.js'
import type { PrivateKey } from '@libp2p/interface'

/*
 * A batch-sealed envelope: one of a burst of payloads signed together. The payloads are the
 * leaves of a Merkle tree (RFC 9162, `merkle.ts`) and one Ed25519 signature covers its root, so a
 * burst of n envelopes costs one signature to make and one to check instead of n. Each envelope
 * still carries everything needed to verify it alone, after any time in a store:
 *
 *   magic     4   0x50 0x4d 0x42 0x01 ("PMB", format 1; a RecordEnvelope starts with 0x0a)
 *   key      32   the signer's Ed25519 public key
 *   size      2   leaves in the batch, big-endian, ≥ 1
 *   index     2   this leaf, big-endian, < size
 *   signature 64  over signedBytes(BATCH_DOMAIN, payload type, size ‖ root)
 *   proof  32·k   the leaf's inclusion proof, k fixed by index and size
 *   payload  rest the envelope's canonical JSON (the leaf)
 *
 * There is one encoding of each, so bytes that verify are the bytes to store and hand on.
 */

/** RecordEnvelope-style domain of batch roots: a root signature never verifies as anything else. */
export const BATCH_DOMAIN = 'persona-mesh/envelope-batch'
const MAGIC = Uint8Array.of(0x50, 0x4d, 0x42, 0x01)
const HEADER = MAGIC.byteLength + PUBLIC_KEY_LENGTH + 2 + 2 + SIGNATURE_LENGTH
/** Most leaves a batch can have (the size field's range). */
export const MAX_BATCH_SIZE = 0xffff

/** Whether `data` is in the batch-sealed form (it may still be malformed). */
export function isBatchSealed (data: Uint8Array): boolean {
  return data.byteLength >= MAGIC.byteLength && data[0] === MAGIC[0] && data[1] === MAGIC[1] && data[2] === MAGIC[2] && data[3] === MAGIC[3]
}

interface BatchParts {
  key: Uint8Array
  size: number
  index: number
  signature: Uint8Array
  proof: Uint8Array[]
  payload: Uint8Array
}

function parse (data: Uint8Array): BatchParts {
  if (!isBatchSealed(data) || data.byteLength <= HEADER) throw new MalformedMessageError('not a batch-sealed envelope')
  const at = MAGIC.byteLength
  const key = data.subarray(at, at + PUBLIC_KEY_LENGTH)
  const size = (data[at + PUBLIC_KEY_LENGTH]! << 8) | data[at + PUBLIC_KEY_LENGTH + 1]!
  const index = (data[at + PUBLIC_KEY_LENGTH + 2]! << 8) | data[at + PUBLIC_KEY_LENGTH + 3]!
  const signature = data.subarray(HEADER - SIGNATURE_LENGTH, HEADER)
  const length = proofShape(index, size)?.length
  if (length === undefined) throw new MalformedMessageError(`batch-sealed envelope: leaf ${index} of a batch of ${size}`)
  const payloadAt = HEADER + length * HASH_LENGTH
  if (payloadAt >= data.byteLength) throw new MalformedMessageError('batch-sealed envelope is truncated')
  const proof = Array.from({ length }, (_, i) => data.subarray(HEADER + i * HASH_LENGTH, HEADER + (i + 1) * HASH_LENGTH))
  return { key, size, index, signature, proof, payload: data.subarray(payloadAt) }
}

/** What a batch's root signature covers. */
function signedRoot (payloadType: Uint8Array, size: number, root: Uint8Array): Uint8Array {
  const message = new Uint8Array(2 + HASH_LENGTH)
  message[0] = size >>> 8
  message[1] = size & 0xff
  message.set(root, 2)
  return signedBytes(BATCH_DOMAIN, payloadType, message)
}

/**
 * Seal `payloads` (at least one) as one batch under the Ed25519 `privateKey`: one signature for
 * all of them. Every sealed payload must fit in `maxSize` (else `TooLargeError`, nothing sealed).
 */
export async function sealBatch (payloadType: Uint8Array, payloads: readonly Uint8Array[], privateKey: PrivateKey, maxSize: number): Promise<Uint8Array[]> {
  const size = payloads.length
  if (size === 0 || size > MAX_BATCH_SIZE) throw new RangeError(`a batch has 1 to ${MAX_BATCH_SIZE} payloads, not ${size}`)
  if (privateKey.type !== 'Ed25519' || privateKey.publicKey.raw.byteLength !== PUBLIC_KEY_LENGTH) {
    throw new InvalidSignatureError('batches are sealed with Ed25519 keys only')
  }
  const tree = merkleTree(payloads.map(leafHash))
  const signature = await privateKey.sign(signedRoot(payloadType, size, tree.root))
  if (signature.byteLength !== SIGNATURE_LENGTH) throw new InvalidSignatureError('an Ed25519 signature must be 64 bytes')
  return payloads.map((payload, index) => {
    const proof = tree.proofs[index]!
    const out = new Uint8Array(HEADER + proof.length * HASH_LENGTH + payload.byteLength)
    if (out.byteLength > maxSize) throw new TooLargeError(out.byteLength, maxSize, 'sealed payload')
    out.set(MAGIC, 0)
    let at = MAGIC.byteLength
    out.set(privateKey.publicKey.raw, at)
    at += PUBLIC_KEY_LENGTH
    out[at++] = size >>> 8
    out[at++] = size & 0xff
    out[at++] = index >>> 8
    out[at++] = index & 0xff
    out.set(signature, at)
    at += SIGNATURE_LENGTH
    for (const hash of proof) {
      out.set(hash, at)
      at += HASH_LENGTH
    }
    out.set(payload, at)
    return out
  })
}

/** Most batch roots whose good verdict is kept: the envelopes of one batch arrive together. */
export const ROOT_CACHE_SIZE = 1024
const roots = new Lru<Promise<boolean>>(ROOT_CACHE_SIZE)

/** How many root verdicts are cached (tests). */
export function cachedRoots (): number {
  return roots.size
}

/**
 * Verify a batch-sealed envelope: size, layout, the proof from its payload to a root, and the
 * signature over that root, checked once for all the leaves of a batch (verdicts are kept per
 * key, root and signature, so a leaf never borrows another signature's verdict). Returns the
 * payload and its signer; throws `TooLargeError`, `MalformedMessageError` or `InvalidSignatureError`.
 */
export async function openBatch (data: Uint8Array, payloadType: Uint8Array, maxSize: number, check?: SignatureCheck): Promise<OpenedPayload> {
  if (data.byteLength > maxSize) throw new TooLargeError(data.byteLength, maxSize, 'sealed payload')
  const parts = parse(data)
  const root = rootFromProof(leafHash(parts.payload), parts.index, parts.size, parts.proof)
  let signer: string | undefined
  let valid = false
  try {
    signer = signerOf(parts.key)
    if (root !== undefined) {
      const message = signedRoot(payloadType, parts.size, root)
      const key = `${bytesKey(parts.key)}${bytesKey(parts.signature)}${bytesKey(message)}`
      valid = await roots.getOr(key, () => verify(message, parts, check))
      // only a good verdict is kept: a failed check costs a forger as much as it costs us
      if (!valid) roots.delete(key)
    }
  } catch {
    valid = false
  }
  if (!valid || signer === undefined) throw new InvalidSignatureError('signature does not verify')
  return { payload: parts.payload, signer }
}

async function verify (message: Uint8Array, parts: BatchParts, check?: SignatureCheck): Promise<boolean> {
  // copies: the verdict outlives this frame, and a worker would take the whole frame's buffer
  const key = Uint8Array.from(parts.key)
  const signature = Uint8Array.from(parts.signature)
  try {
    return check === undefined ? ed25519().verify(message, key, signature) : await check(message, key, signature)
  } catch {
    return false
  }
}

/** The payload of a batch-sealed envelope read back from a node's own store, unverified. */
export function storedBatchPayload (data: Uint8Array): Uint8Array {
  return parse(data).payload
}
