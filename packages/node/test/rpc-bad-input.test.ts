/**
 * A victim node answers `echo`; an attacker node speaks raw bytes to it over
 * `/persona-mesh/rpc/1.0.0`; after every case an honest third node must still get its `echo`
 * answered. Real nodes over TCP on 127.0.0.1, mDNS off. Waits are on events, with timeouts.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Stream } from '@libp2p/interface'
import { LengthPrefixedDecoder } from '@libp2p/utils'
import type { MeshNode } from '@persona-mesh/node'
import { createMeshNode } from '@persona-mesh/node'
import type { JsonValue, NackReason, RpcFrame } from '@persona-mesh/protocol'
import {
  decodeRpcFrame,
  encodeRpcFrame,
  MAX_FRAME_SIZE,
  RPC_PROTOCOL,
  salvageRequestId,
  UnsupportedVersionError
} from '@persona-mesh/protocol'
import * as varint from 'uint8-varint'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { concat, lengthPrefixed, RawStream } from './raw-stream.js'
import { randomBytes } from '../../../test/support/random.js'

const WAIT_MS = 15_000

let home: string
let victim: MeshNode
let attacker: MeshNode
let honest: MeshNode

/** The `hold` handler parks every request until the test lets it go. */
let holdEntered: PromiseWithResolvers<void>
let holdRelease: PromiseWithResolvers<void>

beforeAll(async () => {
  home = await mkdtemp(join(tmpdir(), 'pmesh-rpc-bad-'))
  const node = async (name: string): Promise<MeshNode> => createMeshNode({ name, home, mdns: false, listen: ['/ip4/127.0.0.1/tcp/0'] })
  victim = await node('victim')
  attacker = await node('attacker')
  honest = await node('honest')
  victim.handle('echo', body => body)
  victim.handle('hold', async (body) => {
    holdEntered.resolve()
    await holdRelease.promise
    return body
  })
  await attacker.dial(victim.multiaddrs[0])
  await honest.dial(victim.multiaddrs[0])
})

afterAll(async () => {
  holdRelease?.resolve()
  await Promise.allSettled([victim, attacker, honest].filter(n => n !== undefined).map(async n => { await n.stop() }))
  await rm(home, { recursive: true, force: true })
})

/** The victim still serves an honest peer. */
async function honestEchoWorks (tag: string): Promise<void> {
  const body = { tag, n: [1, 2, 3] }
  expect(await honest.request(victim.peerId, 'echo', body, { timeout: WAIT_MS })).toEqual(body)
  expect(victim.isStarted).toBe(true)
}

const utf8 = (s: string): Uint8Array => new TextEncoder().encode(s)
const json = (value: unknown): Uint8Array => utf8(JSON.stringify(value))

function request (id: number, body: JsonValue = { id }, method = 'echo'): Uint8Array {
  return encodeRpcFrame({ v: 1, t: 'req', id, method, timeout: WAIT_MS, body })
}

/** An `echo` request whose encoding is exactly `size` bytes (the body is a string of padding). */
function requestOfSize (id: number, size: number): { bytes: Uint8Array, padding: string } {
  const padding = 'x'.repeat(size - request(id, '').byteLength)
  const bytes = request(id, padding)
  expect(bytes.byteLength).toBe(size)
  return { bytes, padding }
}

/** A raw rpc stream from the attacker to the victim: bytes out, decoded frames and close events in. */
class RawRpc extends RawStream<RpcFrame> {
  static async open (): Promise<RawRpc> {
    return new RawRpc(await attacker.libp2p.dialProtocol(victim.libp2p.peerId, RPC_PROTOCOL))
  }

  constructor (stream: Stream) {
    super(stream, decodeRpcFrame, summary, WAIT_MS)
  }

  async frameCount (n: number): Promise<void> {
    await this.until(() => this.frames.length >= n || this.ended, `${n} frame(s)`)
    expect(this.frames.map(summary)).toHaveLength(n)
  }
}

function summary (frame: RpcFrame): { t: string, id: number | null, reason?: NackReason } {
  return frame.t === 'nack' ? { t: frame.t, id: frame.id, reason: frame.reason } : { t: frame.t, id: frame.id }
}

/** Run one hostile case on a fresh raw stream, abort it, then check the victim still serves the honest peer. */
async function hostile (name: string, body: (rpc: RawRpc) => Promise<void>): Promise<void> {
  const rpc = await RawRpc.open()
  try {
    await body(rpc)
    expect(rpc.garbage).toEqual([])
  } finally {
    rpc.abort()
  }
  await honestEchoWorks(name)
}

/**
 * What the victim must answer to `bytes`: every complete frame gets a NACK (with the id, if one can
 * be salvaged), and a length over the limit gets NACK `too_large` (id null) and the end of the stream.
 */
function expectedAnswer (bytes: Uint8Array): { nacks: Array<{ t: 'nack', id: number | null, reason: NackReason }>, ends: boolean } {
  const decoder = new LengthPrefixedDecoder({ maxDataLength: MAX_FRAME_SIZE })
  const nacks: Array<{ t: 'nack', id: number | null, reason: NackReason }> = []
  try {
    for (const frame of decoder.decode(bytes)) {
      const data = frame.subarray()
      let reason: NackReason = 'invalid_request'
      try {
        decodeRpcFrame(data)
        throw new Error('random bytes made a valid frame: pick another seed')
      } catch (err) {
        if (err instanceof UnsupportedVersionError) reason = 'unsupported_version'
      }
      nacks.push({ t: 'nack', id: salvageRequestId(data), reason })
    }
  } catch (err) {
    expect((err as Error).name).toBe('InvalidMessageLengthError')
    return { nacks: [...nacks, { t: 'nack', id: null, reason: 'too_large' }], ends: true }
  }
  return { nacks, ends: false }
}

describe('rpc server under bad input', () => {
  it('answers the honest peer to begin with', async () => {
    await honestEchoWorks('baseline')
  })

  // seeds picked to cover: garbage frames then a partial one (1), only a partial frame (2),
  // an impossible length at once (5), garbage frames then an impossible length (8)
  it.each([1, 2, 5, 8])('random bytes (seed %i): typed NACKs for what can be framed, too_large for the rest', async (seed) => {
    const bytes = randomBytes(seed, 1024)
    const expected = expectedAnswer(bytes)
    await hostile(`random ${seed}`, async (rpc) => {
      rpc.send(bytes)
      await rpc.until(() => rpc.frames.length >= expected.nacks.length && (!expected.ends || rpc.ended), 'the NACKs for the random bytes')
      expect(rpc.frames.map(summary)).toEqual(expected.nacks)
      expect(rpc.ended).toBe(expected.ends)
    })
  })

  it('a length prefix claiming 4 GiB: NACK too_large with id null, then the stream closes', async () => {
    await hostile('4 GiB', async (rpc) => {
      rpc.send(concat(varint.encode(4 * 1024 ** 3), utf8('{"v":1,"t":"req"')))
      await rpc.until(() => rpc.ended, 'the victim to close the stream')
      expect(rpc.frames.map(summary)).toEqual([{ t: 'nack', id: null, reason: 'too_large' }])
      const nack = rpc.frames[0]
      expect(nack.t === 'nack' && nack.message).toMatch(/262144/)
    })
  })

  it('a length prefix that never ends: NACK too_large with id null, then the stream closes', async () => {
    await hostile('endless varint', async (rpc) => {
      // a varint of 0xff bytes never decodes; the victim must give up long before 1 MiB of it
      rpc.send(new Uint8Array(4 * MAX_FRAME_SIZE).fill(0xff))
      await rpc.until(() => rpc.ended, 'the victim to close the stream')
      expect(rpc.frames.map(summary)).toEqual([{ t: 'nack', id: null, reason: 'too_large' }])
    })
  })

  it('a frame one byte over MAX_FRAME_SIZE: NACK too_large with id null, then the stream closes', async () => {
    await hostile('one over', async (rpc) => {
      const { bytes } = requestOfSize(1, MAX_FRAME_SIZE + 1)
      rpc.sendFrame(bytes)
      await rpc.until(() => rpc.ended, 'the victim to close the stream')
      expect(rpc.frames.map(summary)).toEqual([{ t: 'nack', id: null, reason: 'too_large' }])
    })
  })

  it('a frame of exactly MAX_FRAME_SIZE is answered, and the stream stays usable', async () => {
    await hostile('exactly at the limit', async (rpc) => {
      const { bytes, padding } = requestOfSize(41, MAX_FRAME_SIZE)
      rpc.sendFrame(bytes)
      await rpc.frameCount(1)
      expect(rpc.frames[0]).toEqual({ v: 1, t: 'res', id: 41, body: padding })
      rpc.sendFrame(request(42))
      await rpc.frameCount(2)
      expect(rpc.frames[1]).toEqual({ v: 1, t: 'res', id: 42, body: { id: 42 } })
      expect(rpc.ended).toBe(false)
    })
  })

  it('valid framing with wrong types: NACK invalid_request with the salvaged id; the stream keeps working', async () => {
    await hostile('wrong types', async (rpc) => {
      rpc.sendFrame(json({ v: 1, t: 'req', id: 5, method: 42, timeout: 1000, body: null }))
      rpc.sendFrame(json({ v: 1, t: 'req', id: 6, method: 'echo', timeout: 'soon', body: null }))
      rpc.sendFrame(json({ v: 1, t: 'req', id: 7, method: 'echo', timeout: 1000, body: null, extra: 1 }))
      rpc.sendFrame(json({ v: 1, t: 'req', id: '8', method: 'echo', timeout: 1000, body: null }))
      rpc.sendFrame(json({ v: 1, t: 'req', id: -1, method: 'echo', timeout: 1000, body: null }))
      rpc.sendFrame(json([1, 2, 3]))
      rpc.sendFrame(utf8('{"v":1,"t":"req","id":9,'))
      rpc.sendFrame(new Uint8Array([0x7b, 0xff, 0xfe, 0x7d]))
      rpc.sendFrame(utf8(`{"v":1,"t":"req","id":10,"method":"echo","timeout":1000,"body":${'['.repeat(1000)}${']'.repeat(1000)}}`))
      rpc.sendFrame(request(11))
      await rpc.frameCount(10)
      expect(rpc.frames.map(summary)).toEqual([
        { t: 'nack', id: 5, reason: 'invalid_request' },
        { t: 'nack', id: 6, reason: 'invalid_request' },
        { t: 'nack', id: 7, reason: 'invalid_request' },
        { t: 'nack', id: null, reason: 'invalid_request' },
        { t: 'nack', id: null, reason: 'invalid_request' },
        { t: 'nack', id: null, reason: 'invalid_request' },
        { t: 'nack', id: null, reason: 'invalid_request' },
        { t: 'nack', id: null, reason: 'invalid_request' },
        // too deep to parse, so too deep to salvage an id from
        { t: 'nack', id: null, reason: 'invalid_request' },
        { t: 'res', id: 11 }
      ])
      const first = rpc.frames[0]
      expect(first.t === 'nack' && first.message).toMatch(/method/)
      expect(rpc.ended).toBe(false)
    })
  })

  it('an unknown frame version: NACK unsupported_version with the salvaged id', async () => {
    await hostile('unknown version', async (rpc) => {
      rpc.sendFrame(json({ v: 2, t: 'req', id: 6, method: 'echo', timeout: 1000, body: null }))
      rpc.sendFrame(json({ t: 'req', id: 7, method: 'echo', timeout: 1000, body: null }))
      rpc.sendFrame(json({ v: 99, t: 'hello', id: 8, future: true }))
      rpc.sendFrame(request(9))
      await rpc.frameCount(4)
      expect(rpc.frames.map(summary)).toEqual([
        { t: 'nack', id: 6, reason: 'unsupported_version' },
        { t: 'nack', id: 7, reason: 'unsupported_version' },
        { t: 'nack', id: 8, reason: 'unsupported_version' },
        { t: 'res', id: 9 }
      ])
    })
  })

  it('frames only a server sends (res, nack) are NACKed invalid_request; an unknown cancel is ignored', async () => {
    await hostile('server frames', async (rpc) => {
      rpc.sendFrame(encodeRpcFrame({ v: 1, t: 'res', id: 8, body: 'forged answer' }))
      rpc.sendFrame(encodeRpcFrame({ v: 1, t: 'nack', id: 9, reason: 'overloaded' }))
      rpc.sendFrame(encodeRpcFrame({ v: 1, t: 'cancel', id: 12345 }))
      rpc.sendFrame(request(10))
      await rpc.frameCount(3)
      expect(rpc.frames.map(summary)).toEqual([
        { t: 'nack', id: 8, reason: 'invalid_request' },
        { t: 'nack', id: 9, reason: 'invalid_request' },
        { t: 'res', id: 10 }
      ])
    })
  })

  it('an unknown method: NACK incapable', async () => {
    await hostile('unknown method', async (rpc) => {
      rpc.sendFrame(request(3, null, 'no.such.method'))
      await rpc.frameCount(1)
      expect(rpc.frames.map(summary)).toEqual([{ t: 'nack', id: 3, reason: 'incapable' }])
    })
  })

  it('a duplicate in-flight id: NACK invalid_request for the copy, the original still answered', async () => {
    holdEntered = Promise.withResolvers()
    holdRelease = Promise.withResolvers()
    await hostile('duplicate id', async (rpc) => {
      rpc.sendFrame(request(9, 'the original', 'hold'))
      await holdEntered.promise
      rpc.sendFrame(request(9, 'the copy'))
      await rpc.frameCount(1)
      expect(rpc.frames.map(summary)).toEqual([{ t: 'nack', id: 9, reason: 'invalid_request' }])
      const nack = rpc.frames[0]
      expect(nack.t === 'nack' && nack.message).toMatch(/already in use/)
      holdRelease.resolve()
      await rpc.frameCount(2)
      expect(rpc.frames[1]).toEqual({ v: 1, t: 'res', id: 9, body: 'the original' })
      // once answered, the id is free again
      rpc.sendFrame(request(9, 'reused'))
      await rpc.frameCount(3)
      expect(rpc.frames[2]).toEqual({ v: 1, t: 'res', id: 9, body: 'reused' })
    })
  })

  /**
   * Regression: `LengthPrefixedDecoder` checks its buffer limit after appending a whole chunk,
   * so a chunk that completes one large frame and starts the next used to overflow it and frames
   * within the limit got NACK `too_large`. `FrameChannel` now feeds the decoder in frame-sized
   * slices.
   */
  it('frames each within the limit, sent back to back in one write, are all answered', async () => {
    await hostile('pipelined large frames', async (rpc) => {
      const big = requestOfSize(2, MAX_FRAME_SIZE)
      const big2 = requestOfSize(4, MAX_FRAME_SIZE)
      rpc.send(concat(...[request(1), big.bytes, request(3), big2.bytes, request(5)].map(lengthPrefixed)))
      await rpc.until(() => rpc.frames.length >= 5 || rpc.ended, 'five answers')
      expect(rpc.frames.map(summary)).toEqual([1, 2, 3, 4, 5].map(id => ({ t: 'res', id })))
    })
  })

  /**
   * Regression: the server used to leave an inbound stream half-open after the caller closed its
   * end, so such streams counted against MAX_INBOUND_STREAMS until the inactivity timeout. It now
   * closes once its answers are out.
   */
  it('when the caller closes its end after the answer, the server closes its end too', async () => {
    await hostile('half close', async (rpc) => {
      rpc.sendFrame(request(1))
      await rpc.frameCount(1)
      await rpc.stream.close()
      await rpc.until(() => rpc.closed, 'the stream to close on both ends', 5_000)
    })
  })
})
