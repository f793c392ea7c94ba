import { generateKeyPair } from '@libp2p/crypto/keys'
import type { PrivateKey } from '@libp2p/interface'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { beforeAll, describe, expect, it } from 'vitest'
import { cachedRoots, isBatchSealed, sealBatch } from '../src/batch.js'
import { ENVELOPE_PAYLOAD_TYPE } from '../src/constants.js'
import { createEnvelope, type MessageEnvelope } from '../src/envelope.js'
import { InvalidSignatureError, MalformedMessageError, TooLargeError } from '../src/errors.js'
import { canonicalEncode } from '../src/json.js'
import { leafHash, merkleTree, proofShape, rootFromProof } from '../src/merkle.js'
import { openEnvelope, readStoredEnvelope, sealEnvelope, sealEnvelopes } from '../src/seal.js'
import type { SignatureCheck } from '../src/signed.js'
import { H, referencePath, referenceRoot } from './merkle-reference.js'
import { rejection } from './rejection.js'

// The batch-sealed form: a burst of envelopes under one signature over a Merkle root (RFC 9162),
// each envelope carrying its inclusion proof. These tests pin the tree to a straight reading of
// the RFC, and check that no part of a sealed envelope can be changed, swapped or borrowed.

/** Where the fields of a batch-sealed envelope start (see batch.ts). */
const KEY_AT = 4
const SIZE_AT = 36
const INDEX_AT = 38
const SIGNATURE_AT = 40
const PROOF_AT = 104

let alice: PrivateKey
let mallory: PrivateKey
let aliceId: string

beforeAll(async () => {
  alice = await generateKeyPair('Ed25519')
  mallory = await generateKeyPair('Ed25519')
  aliceId = peerIdFromPrivateKey(alice).toString()
})

const leavesOf = (n: number): Uint8Array[] => Array.from({ length: n }, (_, i) => new TextEncoder().encode(`leaf ${i}`))

function envelopes (n: number, from = aliceId): MessageEnvelope[] {
  return Array.from({ length: n }, (_, i) => createEnvelope({ from, to: aliceId, body: { i, text: `message ${i}` }, seq: i + 1 }))
}

describe('merkle (RFC 9162)', () => {
  it('a leaf\'s hash is SHA-256(0x00 ‖ leaf)', () => {
    const data = new TextEncoder().encode('persona mesh')
    expect(leafHash(data)).toEqual(H(Uint8Array.of(0), data))
  })

  it('gives the RFC\'s root and audit path for every leaf of trees of 1 to 40 leaves, and each path leads back to the root', () => {
    for (let n = 1; n <= 40; n++) {
      const leaves = leavesOf(n)
      const tree = merkleTree(leaves.map(leafHash))
      expect(tree.root).toEqual(referenceRoot(leaves))
      for (let m = 0; m < n; m++) {
        expect(tree.proofs[m]).toEqual(referencePath(m, leaves))
        expect(proofShape(m, n)).toHaveLength(tree.proofs[m]!.length)
        expect(rootFromProof(leafHash(leaves[m]!), m, n, tree.proofs[m]!)).toEqual(tree.root)
      }
    }
  })

  it('a proof leads nowhere from another leaf, index or size, with a hash changed, or with one too many or too few', () => {
    const leaves = leavesOf(13)
    const tree = merkleTree(leaves.map(leafHash))
    const proof = tree.proofs[5]!
    const leaf = leafHash(leaves[5]!)
    expect(rootFromProof(leafHash(leaves[6]!), 5, 13, proof)).not.toEqual(tree.root)
    for (const [index, size] of [[4, 13], [6, 13], [5, 8], [5, 6]] as const) {
      expect(rootFromProof(leaf, index, size, proof) ?? 'none').not.toEqual(tree.root)
    }
    // where the proof has the same shape in a tree of another size, it leads to the same root:
    // a root says nothing of its tree's size, which is why a batch signs the size beside it
    expect(rootFromProof(leaf, 5, 12, proof)).toEqual(tree.root)
    expect(rootFromProof(leaf, 5, 16, proof)).toEqual(tree.root)
    const changed = proof.map(h => Uint8Array.from(h))
    changed[1]![7]! ^= 1
    expect(rootFromProof(leaf, 5, 13, changed)).not.toEqual(tree.root)
    expect(rootFromProof(leaf, 5, 13, proof.slice(1))).toBeUndefined()
    expect(rootFromProof(leaf, 5, 13, [...proof, proof[0]!])).toBeUndefined()
    // leaves and nodes are hashed apart: a leaf holding two hashes is not the node over them
    const [a, b] = leaves.slice(0, 2).map(leafHash)
    expect(leafHash(Buffer.concat([a!, b!]))).not.toEqual(merkleTree([a!, b!]).root)
  })

  it('out-of-range positions have no proof', () => {
    for (const [index, size] of [[0, 0], [3, 3], [-1, 4], [1.5, 4], [0, Number.NaN]]) {
      expect(proofShape(index!, size!)).toBeUndefined()
    }
    expect(() => merkleTree([])).toThrow(RangeError)
  })
})

describe('sealEnvelopes', () => {
  it('seals two or more in the batch form, and each opens alone, to the same envelope, signed by its sender', async () => {
    for (const n of [2, 3, 7, 128]) {
      const batch = envelopes(n)
      const sealed = await sealEnvelopes(batch, alice)
      expect(sealed).toHaveLength(n)
      expect(new Set(sealed.map(bytes => Buffer.from(bytes.subarray(SIGNATURE_AT, PROOF_AT)).toString('hex'))).size).toBe(1)
      for (let i = 0; i < n; i++) {
        expect(isBatchSealed(sealed[i]!)).toBe(true)
        expect((await openEnvelope(sealed[i]!)).envelope).toEqual(batch[i])
        expect(readStoredEnvelope(sealed[i]!)).toEqual(batch[i])
      }
    }
  })

  it('one envelope is sealed alone, exactly as sealEnvelope seals it', async () => {
    const [one] = envelopes(1)
    const sealed = await sealEnvelopes([one!], alice)
    expect(sealed).toEqual([await sealEnvelope(one!, alice)])
    expect(isBatchSealed(sealed[0]!)).toBe(false)
  })

  it('refuses a burst with an envelope from someone else, or one that does not fit, and seals none of it', async () => {
    const mixed = [...envelopes(2), ...envelopes(1, peerIdFromPrivateKey(mallory).toString())]
    expect(await rejection(sealEnvelopes(mixed, alice))).toBeInstanceOf(InvalidSignatureError)
    const big = envelopes(3)
    big[1] = createEnvelope({ from: aliceId, to: aliceId, body: { text: 'x'.repeat(2000) }, seq: 9 })
    expect(await rejection(sealEnvelopes(big, alice, { maxSize: 1500 }))).toBeInstanceOf(TooLargeError)
  })

  it('verifies one signature for a whole batch; a failed check is not kept, and a verdict is never borrowed by another signature', async () => {
    const sealed = await sealEnvelopes(envelopes(50), alice)
    let checks = 0
    const counting: SignatureCheck = async (message, key, signature) => { checks++; return (await import('../src/ed25519.js')).ed25519().verify(message, key, signature) }
    const before = cachedRoots()
    await Promise.all(sealed.map(async bytes => await openEnvelope(bytes, { checkSignature: counting })))
    expect(checks).toBe(1)
    expect(cachedRoots()).toBe(before + 1)

    // the same root under a signature that does not verify: refused, checked, and not cached
    const other = await sealEnvelopes(envelopes(4), alice)
    const badSignature = Uint8Array.from(other[0]!)
    badSignature[SIGNATURE_AT + 10]! ^= 0x40
    checks = 0
    expect(await rejection(openEnvelope(badSignature, { checkSignature: counting }))).toBeInstanceOf(InvalidSignatureError)
    expect(await rejection(openEnvelope(badSignature, { checkSignature: counting }))).toBeInstanceOf(InvalidSignatureError)
    expect(checks).toBe(2)
    expect((await openEnvelope(other[0]!, { checkSignature: counting })).envelope.seq).toBe(1)
    // and once the good signature's verdict is kept, the bad one still does not ride on it
    expect(await rejection(openEnvelope(badSignature, { checkSignature: counting }))).toBeInstanceOf(InvalidSignatureError)
    // a kept verdict is not checked again
    const refusing: SignatureCheck = () => false
    expect((await openEnvelope(sealed[0]!, { checkSignature: refusing })).envelope.seq).toBe(1)
  })
})

describe('opening a batch-sealed envelope refuses every change', () => {
  let sealed: Uint8Array[]
  let batch: MessageEnvelope[]

  beforeAll(async () => {
    batch = envelopes(5)
    sealed = await sealEnvelopes(batch, alice)
  })

  const changed = (i: number, change: (bytes: Uint8Array) => void): Uint8Array => {
    const bytes = Uint8Array.from(sealed[i]!)
    change(bytes)
    return bytes
  }

  it('a tampered leaf (the payload), a forged proof, a changed signature', async () => {
    const tampered = changed(2, bytes => {
      const at = Buffer.from(bytes).indexOf('message 2')
      bytes[at + 8] = '3'.charCodeAt(0)
    })
    const forgedProof = changed(2, bytes => { bytes[PROOF_AT + 3]! ^= 1 })
    const badSignature = changed(2, bytes => { bytes[SIGNATURE_AT]! ^= 1 })
    for (const bytes of [tampered, forgedProof, badSignature]) {
      expect(await rejection(openEnvelope(bytes))).toBeInstanceOf(InvalidSignatureError)
    }
  })

  it('a proof for another index or batch size', async () => {
    // leaf 1's proof claimed for index 0 (same length), and batch sizes that keep or change the proof's length
    const otherIndex = changed(1, bytes => { bytes[INDEX_AT + 1] = 0 })
    const otherSize = changed(4, bytes => { bytes[SIZE_AT + 1] = 6 })
    const shorterSize = changed(0, bytes => { bytes[SIZE_AT + 1] = 2 })
    for (const bytes of [otherIndex, otherSize]) {
      expect(await rejection(openEnvelope(bytes))).toBeInstanceOf(InvalidSignatureError)
    }
    // a size whose proofs are shorter takes proof hashes for the payload: that leaf was never signed
    expect(await rejection(openEnvelope(shorterSize))).toBeInstanceOf(InvalidSignatureError)
    expect(await rejection(openEnvelope(changed(0, bytes => { bytes[INDEX_AT + 1] = 5 })))).toBeInstanceOf(MalformedMessageError)
    expect(await rejection(openEnvelope(changed(0, bytes => { bytes[SIZE_AT + 1] = 0 })))).toBeInstanceOf(MalformedMessageError)
  })

  it('a leaf under another batch\'s signature, and a root signed by another key', async () => {
    const [elsewhere] = await sealEnvelopes(envelopes(5), alice)
    const borrowed = changed(0, bytes => { bytes.set(elsewhere!.subarray(SIGNATURE_AT, PROOF_AT), SIGNATURE_AT) })
    expect(await rejection(openEnvelope(borrowed))).toBeInstanceOf(InvalidSignatureError)

    // alice's leaves under mallory's key: the signature is not mallory's
    const otherKey = changed(0, bytes => { bytes.set(mallory.publicKey.raw, KEY_AT) })
    expect(await rejection(openEnvelope(otherKey))).toBeInstanceOf(InvalidSignatureError)
    // mallory signs a batch of envelopes that claim to be alice's: it verifies, as mallory's, and is refused
    const claimed = await sealBatch(ENVELOPE_PAYLOAD_TYPE, batch.map(e => canonicalEncode(e)), mallory, 1 << 20)
    const err = await rejection(openEnvelope(claimed[0]!))
    expect(err).toBeInstanceOf(InvalidSignatureError)
    expect(err.message).toMatch(/claims to be from .* but is signed by/)
  })

  it('truncated, empty, over the size limit, or a payload that is not canonical', async () => {
    for (const bytes of [sealed[0]!.subarray(0, PROOF_AT), sealed[0]!.subarray(0, 4), sealed[0]!.subarray(0, PROOF_AT + 10)]) {
      expect(await rejection(openEnvelope(bytes))).toBeInstanceOf(MalformedMessageError)
    }
    expect(await rejection(openEnvelope(sealed[0]!, { maxSize: 200 }))).toBeInstanceOf(TooLargeError)
    expect(() => readStoredEnvelope(sealed[0]!.subarray(0, 50))).toThrow(MalformedMessageError)

    const spaced = new TextEncoder().encode(JSON.stringify(batch[0], null, 1))
    const [nonCanonical] = await sealBatch(ENVELOPE_PAYLOAD_TYPE, [spaced, canonicalEncode(batch[1]!)], alice, 1 << 20)
    expect(await rejection(openEnvelope(nonCanonical!))).toBeInstanceOf(MalformedMessageError)
  })

  it('an expired envelope in a batch', async () => {
    expect(await rejection(openEnvelope(sealed[0]!, { now: batch[0]!.expiresAt + 1 }))).toMatchObject({ name: 'ExpiredError' })
  })
})
