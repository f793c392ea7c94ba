import type { RpcFrame } from '@persona-mesh/protocol'
import {
  decodeRpcFrame,
  ExpiredError,
  encodeRpcFrame,
  InvalidSignatureError,
  MAX_METHOD_LENGTH,
  MAX_NACK_MESSAGE,
  MAX_RPC_TIMEOUT_MS,
  MalformedMessageError,
  MeshError,
  NACK_REASONS,
  NackError,
  nackFrame,
  StaleRecordError,
  salvageRequestId,
  TooLargeError,
  UnsupportedVersionError,
  WIRE_VERSION
} from '@persona-mesh/protocol'
import { describe, expect, it } from 'vitest'

const utf8 = (s: string): Uint8Array => new TextEncoder().encode(s)
const json = (value: unknown): Uint8Array => utf8(JSON.stringify(value))

function thrown (fn: () => unknown): Error {
  try {
    fn()
  } catch (err) {
    return err as Error
  }
  throw new Error('expected a throw')
}

const req = { v: 1, t: 'req', id: 1, method: 'echo', timeout: 1000, body: { a: [1, 'b', null] } }

describe('rpc frames', () => {
  it.each<[string, RpcFrame]>([
    ['req', { v: 1, t: 'req', id: 0, method: 'echo', timeout: 30_000, body: { hello: ['world', 1, true, null] } }],
    ['req at the limits', { v: 1, t: 'req', id: 0xffffffff, method: 'm'.repeat(MAX_METHOD_LENGTH), timeout: MAX_RPC_TIMEOUT_MS, body: null }],
    ['res', { v: 1, t: 'res', id: 42, body: 'ok' }],
    ['nack', { v: 1, t: 'nack', id: 7, reason: 'overloaded', message: 'busy' }],
    ['nack without id or message', { v: 1, t: 'nack', id: null, reason: 'too_large' }],
    ['cancel', { v: 1, t: 'cancel', id: 9 }]
  ])('round-trips %s', (_, frame) => {
    const bytes = encodeRpcFrame(frame)
    expect(bytes).toBeInstanceOf(Uint8Array)
    expect(decodeRpcFrame(bytes)).toEqual(frame)
  })

  it('builds nacks, cutting long messages to MAX_NACK_MESSAGE', () => {
    expect(nackFrame(null, 'invalid_request')).toEqual({ v: WIRE_VERSION, t: 'nack', id: null, reason: 'invalid_request' })
    expect('message' in nackFrame(3, 'timeout')).toBe(false)
    const long = nackFrame(3, 'internal_error', 'x'.repeat(MAX_NACK_MESSAGE + 10))
    expect(long.message).toHaveLength(MAX_NACK_MESSAGE)
    expect(decodeRpcFrame(encodeRpcFrame(long))).toEqual(long)
  })

  it('every NACK reason survives the wire', () => {
    for (const reason of NACK_REASONS) {
      expect(decodeRpcFrame(encodeRpcFrame(nackFrame(1, reason)))).toMatchObject({ reason })
    }
  })

  describe('versions', () => {
    it.each([
      ['v: 2', 2],
      ['v: 0', 0],
      ['v: "1"', '1']
    ])('%s is UnsupportedVersionError', (_, v) => {
      const err = thrown(() => decodeRpcFrame(json({ ...req, v })))
      expect(err).toBeInstanceOf(UnsupportedVersionError)
      expect(err.name).toBe('UnsupportedVersionError')
      expect((err as UnsupportedVersionError).version).toBe(v)
    })

    it('a missing v is UnsupportedVersionError, checked before the rest of the frame', () => {
      const { v: _, ...rest } = req
      expect(thrown(() => decodeRpcFrame(json({ ...rest, t: 'nonsense' })))).toBeInstanceOf(UnsupportedVersionError)
    })
  })

  describe('bad frames are MalformedMessageError', () => {
    it.each<[string, unknown]>([
      ['a negative id', { ...req, id: -1 }],
      ['an id over 32 bits', { ...req, id: 2 ** 32 }],
      ['a fractional id', { ...req, id: 1.5 }],
      ['a string id', { ...req, id: '1' }],
      ['a null id on a request', { ...req, id: null }],
      ['an empty method', { ...req, method: '' }],
      ['a method too long', { ...req, method: 'm'.repeat(MAX_METHOD_LENGTH + 1) }],
      ['a numeric method', { ...req, method: 42 }],
      ['a zero timeout', { ...req, timeout: 0 }],
      ['a timeout over the maximum', { ...req, timeout: MAX_RPC_TIMEOUT_MS + 1 }],
      ['a missing body', { v: 1, t: 'req', id: 1, method: 'echo', timeout: 1000 }],
      ['an extra field', { ...req, extra: true }],
      ['an unknown frame type', { ...req, t: 'push' }],
      ['a missing frame type', { v: 1, id: 1 }],
      ['a nack with an unknown reason', { v: 1, t: 'nack', id: 1, reason: 'because' }],
      ['a nack message too long', { v: 1, t: 'nack', id: 1, reason: 'timeout', message: 'x'.repeat(MAX_NACK_MESSAGE + 1) }],
      ['a cancel with a body', { v: 1, t: 'cancel', id: 1, body: null }],
      ['a res without an id', { v: 1, t: 'res', body: null }],
      ['an array', [req]],
      ['a string', 'req'],
      ['null', null]
    ])('%s', (_, frame) => {
      const err = thrown(() => decodeRpcFrame(json(frame)))
      expect(err).toBeInstanceOf(MalformedMessageError)
      expect(err.name).toBe('MalformedMessageError')
    })

    it('names the offending field', () => {
      expect(thrown(() => decodeRpcFrame(json({ ...req, timeout: 'soon' }))).message).toMatch(/timeout/)
    })

    it.each<[string, Uint8Array]>([
      ['invalid JSON', utf8('{"v":1,"t":"req",')],
      ['invalid UTF-8', new Uint8Array([0x7b, 0xc3, 0x28, 0x7d])],
      ['empty bytes', new Uint8Array(0)],
      ['a body nested too deep', utf8(`{"v":1,"t":"res","id":1,"body":${'['.repeat(64)}${']'.repeat(64)}}`)]
    ])('%s', (_, bytes) => {
      expect(thrown(() => decodeRpcFrame(bytes))).toBeInstanceOf(MalformedMessageError)
    })

    it('a body nested just inside the limit is fine', () => {
      const body = `${'['.repeat(63)}${']'.repeat(63)}`
      expect(decodeRpcFrame(utf8(`{"v":1,"t":"res","id":1,"body":${body}}`))).toMatchObject({ t: 'res', id: 1 })
    })
  })

  describe('salvageRequestId', () => {
    it.each<[string, Uint8Array, number | null]>([
      ['a frame with a bad method', json({ ...req, id: 17, method: 42 }), 17],
      ['a frame with an unknown version', json({ ...req, id: 18, v: 9 }), 18],
      ['a frame with an unknown type', json({ v: 1, t: 'push', id: 0 }), 0],
      ['the largest id', json({ id: 0xffffffff }), 0xffffffff],
      ['an id out of range', json({ ...req, id: 2 ** 32 }), null],
      ['a negative id', json({ ...req, id: -1 }), null],
      ['a string id', json({ ...req, id: '5' }), null],
      ['no id', json({ v: 1 }), null],
      ['JSON null', utf8('null'), null],
      ['an array', json([{ id: 1 }]), null],
      ['invalid JSON', utf8('{"id":5,'), null],
      ['invalid UTF-8', new Uint8Array([0x7b, 0xff, 0x7d]), null],
      ['deep nesting', utf8(`{"id":5,"x":${'['.repeat(100)}${']'.repeat(100)}}`), null]
    ])('%s → %s', (_, bytes, expected) => {
      expect(salvageRequestId(bytes)).toBe(expected)
    })
  })
})

describe('errors', () => {
  it('NackError carries the reason and the detail', () => {
    const err = new NackError('overloaded', 'too many requests')
    expect(err).toBeInstanceOf(MeshError)
    expect(err).toBeInstanceOf(Error)
    expect(err.name).toBe('NackError')
    expect(err.reason).toBe('overloaded')
    expect(err.detail).toBe('too many requests')
    expect(err.message).toBe('peer refused: overloaded: too many requests')
  })

  it('NackError without a detail, or with an empty one, has none', () => {
    for (const detail of [undefined, '']) {
      const err = new NackError('incapable', detail)
      expect(err.reason).toBe('incapable')
      expect(err.detail).toBeUndefined()
      expect(err.message).toBe('peer refused: incapable')
    }
  })

  it('every error has its own name and is a MeshError', () => {
    const errors: Array<[Error, string]> = [
      [new MeshError('x'), 'MeshError'],
      [new InvalidSignatureError('x'), 'InvalidSignatureError'],
      [new ExpiredError('x'), 'ExpiredError'],
      [new TooLargeError(10, 5), 'TooLargeError'],
      [new UnsupportedVersionError(3), 'UnsupportedVersionError'],
      [new MalformedMessageError('x'), 'MalformedMessageError'],
      [new StaleRecordError('x'), 'StaleRecordError'],
      [new NackError('timeout'), 'NackError']
    ]
    for (const [err, name] of errors) {
      expect(err.name).toBe(name)
      expect(err).toBeInstanceOf(MeshError)
    }
  })

  it('TooLargeError and UnsupportedVersionError carry their values', () => {
    const big = new TooLargeError(300, 256, 'request')
    expect([big.size, big.limit]).toEqual([300, 256])
    expect(big.message).toBe('request of 300 bytes exceeds the limit of 256 bytes')
    const version = new UnsupportedVersionError(undefined, 'rpc frame')
    expect(version.version).toBeUndefined()
    expect(version.message).toBe('rpc frame has unsupported version undefined')
  })
})
