import { createHash } from 'node:crypto'

/** SHA-256 of the parts, through a Hash object: a different path than the code under test takes. */
export const H = (...parts: Uint8Array[]): Uint8Array => new Uint8Array(createHash('sha256').update(Buffer.concat(parts)).digest())

/** MTH of RFC 9162 §2.1.1, written as the RFC states it. */
export function referenceRoot (leaves: Uint8Array[]): Uint8Array {
  if (leaves.length === 1) return H(Uint8Array.of(0), leaves[0]!)
  let k = 1
  while (k * 2 < leaves.length) k *= 2
  return H(Uint8Array.of(1), referenceRoot(leaves.slice(0, k)), referenceRoot(leaves.slice(k)))
}

/** PATH of RFC 9162 §2.1.3.1. */
export function referencePath (m: number, leaves: Uint8Array[]): Uint8Array[] {
  if (leaves.length === 1) return []
  let k = 1
  while (k * 2 < leaves.length) k *= 2
  return m < k
    ? [...referencePath(m, leaves.slice(0, k)), referenceRoot(leaves.slice(k))]
    : [...referencePath(m - k, leaves.slice(k)), referenceRoot(leaves.slice(0, k))]
}

