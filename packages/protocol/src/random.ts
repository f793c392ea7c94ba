/**
 * Cryptographically strong random bytes, drawn from a pool refilled in large blocks: ids and
 * trace ids need a few bytes each, and one `getRandomValues` call costs far more than copying
 * them out of a buffer. Every byte is handed out once.
 */
const POOL_SIZE = 4096
const pool = new Uint8Array(POOL_SIZE)
let offset = POOL_SIZE

/** The next `n` random bytes (`n` ≤ 4096), as a view that is only valid until the next call. */
export function takeRandom (n: number): Uint8Array {
  if (n > POOL_SIZE) throw new RangeError(`at most ${POOL_SIZE} random bytes at a time`)
  if (offset + n > POOL_SIZE) {
    globalThis.crypto.getRandomValues(pool)
    offset = 0
  }
  const out = pool.subarray(offset, offset + n)
  offset += n
  return out
}

const HEX: string[] = []
for (let i = 0; i < 256; i++) HEX.push(i.toString(16).padStart(2, '0'))

/** `n` random bytes as lowercase hex. */
export function randomHex (n: number): string {
  const bytes = takeRandom(n)
  let out = ''
  for (let i = 0; i < bytes.length; i++) out += HEX[bytes[i]!]
  return out
}
