import { describe, expect, it, vi } from 'vitest'
import { leafHash, merkleTree, rootFromProof } from '../src/merkle.js'
import { referencePath, referenceRoot } from './merkle-reference.js'

// where sodium-native does not load, node hashes go through OpenSSL: the same tree
vi.mock('../src/ed25519.js', async (original) => ({ ...await original<typeof import('../src/ed25519.js')>(), sodiumHash: () => undefined }))

describe('merkle without libsodium', () => {
  it('gives the RFC\'s root and audit paths', () => {
    for (const n of [1, 2, 3, 5, 8, 13, 33]) {
      const leaves = Array.from({ length: n }, (_, i) => new TextEncoder().encode(`leaf ${i}`))
      const tree = merkleTree(leaves.map(leafHash))
      expect(tree.root).toEqual(referenceRoot(leaves))
      for (let m = 0; m < n; m++) {
        expect(tree.proofs[m]).toEqual(referencePath(m, leaves))
        expect(rootFromProof(leafHash(leaves[m]!), m, n, tree.proofs[m]!)).toEqual(tree.root)
      }
    }
  })
})
