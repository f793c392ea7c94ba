/**
 * Deterministic pseudo-random numbers for tests (mulberry32): the same cases on every run, so a
 * failure can be replayed from its seed.
 */

/** Unsigned 32-bit integers. */
export function prng32 (seed: number): () => number {
  let a = seed
  return () => {
    a = (a + 0x6D2B79F5) | 0
    let t = Math.imul(a ^ (a >>> 15), 1 | a)
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
    return (t ^ (t >>> 14)) >>> 0
  }
}

/** Numbers in [0, 1). */
export function prng (seed: number): () => number {
  const next = prng32(seed)
  return () => next() / 4294967296
}

/** `length` bytes. */
export function randomBytes (seed: number, length: number): Uint8Array {
  const next = prng32(seed)
  return Uint8Array.from({ length }, () => next() & 0xff)
}
