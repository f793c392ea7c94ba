import { LengthPrefixedDecoder } from '@libp2p/utils'
import * as varint from 'uint8-varint'
import { describe, expect, it } from 'vitest'
import { FrameDecoder, FrameTooLargeError, FramingError } from '../src/framing.js'
import { prng32, randomBytes } from '../../../test/support/random.js'
import { concat, lengthPrefixed } from './raw-stream.js'

const LIMIT = 4096

function framed (payloads: Uint8Array[]): Uint8Array {
  return concat(...payloads.map(lengthPrefixed))
}

/** `bytes` cut at random places into chunks of 1 byte up to `max`; some chunks come as lists of parts, as a stream may hand them. */
function chunked (bytes: Uint8Array, seed: number, max: number): Array<Uint8Array | Uint8Array[]> {
  const next = prng32(seed)
  const chunks: Array<Uint8Array | Uint8Array[]> = []
  for (let at = 0; at < bytes.byteLength;) {
    const n = Math.min(1 + (next() % max), bytes.byteLength - at)
    const chunk = bytes.subarray(at, at + n)
    if (next() % 4 === 0 && n > 1) {
      const cut = 1 + (next() % (n - 1))
      chunks.push([chunk.subarray(0, cut), chunk.subarray(cut)])
    } else {
      chunks.push(chunk)
    }
    at += n
  }
  return chunks
}

/** The frames, as hex (cheaper to compare than arrays of bytes). */
function decodeAll (decoder: FrameDecoder, chunks: Array<Uint8Array | Uint8Array[]>): string[] {
  const frames: string[] = []
  for (const chunk of chunks) decoder.decode(chunk, (f) => { frames.push(hex(f)) })
  return frames
}

function hex (bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('hex')
}

describe('FrameDecoder', () => {
  it('gives back every non-empty frame, in order, however the stream is cut (checked against libp2p\'s decoder)', () => {
    for (let seed = 1; seed <= 20; seed++) {
      const next = prng32(seed)
      const payloads = Array.from({ length: 60 }, (_, i) => {
        const r = next() % 10
        const size = r === 0 ? 0 : r === 1 ? LIMIT : r < 5 ? next() % 200 : next() % LIMIT
        return randomBytes(seed * 1000 + i, size)
      })
      const stream = framed(payloads)
      const oracle = [...new LengthPrefixedDecoder({ maxDataLength: LIMIT }).decode(stream)].map(f => hex(f.subarray()))
      expect(oracle).toEqual(payloads.filter(p => p.byteLength > 0).map(hex))
      for (const max of [1, 3, 64, 5000, stream.byteLength]) {
        expect(decodeAll(new FrameDecoder(LIMIT), chunked(stream, seed * 7 + max, max))).toEqual(oracle)
      }
    }
  })

  it('hands out a frame that lies inside one chunk as a view of it, not a copy', () => {
    const stream = framed([Uint8Array.of(1, 2, 3), Uint8Array.of(4)])
    const frames: Uint8Array[] = []
    new FrameDecoder(LIMIT).decode(stream, (f) => { frames.push(f) })
    expect(frames.map(f => [...f])).toEqual([[1, 2, 3], [4]])
    expect(frames.every(f => f.buffer === stream.buffer)).toBe(true)
  })

  it('refuses a length over the limit as soon as the prefix says so, after the frames before it', () => {
    const ok = Uint8Array.of(9, 9)
    const stream = framed([ok])
    const frames: Uint8Array[] = []
    const decoder = new FrameDecoder(LIMIT)
    // the prefix alone, no body: refused before any of the body arrives
    const chunk = new Uint8Array([...stream, ...varint.encode(LIMIT + 1)])
    expect(() => { decoder.decode(chunk, (f) => { frames.push(f) }) }).toThrow(FrameTooLargeError)
    expect(frames).toEqual([ok])
  })

  it('refuses an oversized length whose prefix is split across chunks', () => {
    const prefix = varint.encode(10 * LIMIT)
    expect(prefix.byteLength).toBeGreaterThan(1)
    const decoder = new FrameDecoder(LIMIT)
    expect(() => {
      for (const byte of prefix) decoder.decode(Uint8Array.of(byte), () => {})
    }).toThrow(FrameTooLargeError)
  })

  it('refuses a prefix that never ends (and holds no more than the prefix meanwhile)', () => {
    const decoder = new FrameDecoder(Number.MAX_SAFE_INTEGER)
    let err: unknown
    let fed = 0
    try {
      for (; fed < 100; fed++) decoder.decode(Uint8Array.of(0x80), () => {})
    } catch (e) {
      err = e
    }
    expect(err).toBeInstanceOf(FramingError)
    expect(err).not.toBeInstanceOf(FrameTooLargeError)
    expect(fed).toBeLessThan(10)
  })

  it('finishes a frame split over many small chunks, and the frame right behind it in the last chunk', () => {
    const big = randomBytes(5, LIMIT)
    const small = Uint8Array.of(7, 7, 7)
    const stream = framed([big, small])
    const chunks = Array.from({ length: Math.ceil(stream.byteLength / 100) }, (_, i) => stream.subarray(i * 100, (i + 1) * 100))
    expect(decodeAll(new FrameDecoder(LIMIT), chunks)).toEqual([hex(big), hex(small)])
  })
})
