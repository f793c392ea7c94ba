import {
  canonicalStringify,
  createEnvelope,
  EnvelopeSchema,
  isCanonicalJsonText,
  isPlainEnvelope,
  MAX_JSON_DEPTH,
  newId,
  newTrace
} from '@persona-mesh/protocol'
import { describe, expect, it } from 'vitest'
import { prng } from '../../../test/support/random.js'

const STRING_PARTS = ['a', 'Z', 'é', '😀', '"', '\\', '/', '\n', '\t', '\u0001', '\u001f', '\u007f', '\u2028', ' ', '0', 'x'.repeat(40)]
const NUMBERS = [0, -1, 7, 42, 1.5, -0.25, 1e21, 1.5e-7, 123456789012345, 2 ** 53, -(2 ** 31), 0.1, 1e-7, 5e-324]

function randomString (rnd: () => number): string {
  let s = ''
  const n = Math.floor(rnd() * 6)
  for (let i = 0; i < n; i++) s += STRING_PARTS[Math.floor(rnd() * STRING_PARTS.length)]
  return s
}

function randomValue (rnd: () => number, depth: number): unknown {
  const r = rnd()
  if (depth > 3 || r < 0.45) {
    const p = rnd()
    if (p < 0.4) return randomString(rnd)
    if (p < 0.8) return NUMBERS[Math.floor(rnd() * NUMBERS.length)]
    return p < 0.9 ? rnd() < 0.5 : null
  }
  if (r < 0.7) return Array.from({ length: Math.floor(rnd() * 4) }, () => randomValue(rnd, depth + 1))
  const obj: Record<string, unknown> = {}
  const n = Math.floor(rnd() * 5)
  for (let i = 0; i < n; i++) obj[randomString(rnd) || 'k'] = randomValue(rnd, depth + 1)
  return obj
}

const MUTATION_CHARS = [' ', '\n', ',', ':', '{', '}', '[', ']', '"', '\\', '0', '1', '.', 'e', 'E', '-', '+', 'u', 'a', '/']

/** Small edits of canonical text: most make it invalid or non-canonical, some keep it canonical. */
function mutate (rnd: () => number, text: string): string {
  const at = Math.floor(rnd() * (text.length + 1))
  const c = MUTATION_CHARS[Math.floor(rnd() * MUTATION_CHARS.length)]!
  switch (Math.floor(rnd() * 5)) {
    case 0: return text.slice(0, at) + c + text.slice(at)
    case 1: return text.slice(0, at) + text.slice(at + 1)
    case 2: return text.slice(0, at) + c + text.slice(at + 1)
    case 3: {
      const end = Math.min(text.length, at + 1 + Math.floor(rnd() * 8))
      return text.slice(0, end) + text.slice(at, end) + text.slice(end)
    }
    default: {
      const other = Math.floor(rnd() * text.length)
      const chars = [...text]
      const a = Math.min(at, chars.length - 1)
      ;[chars[a], chars[other]] = [chars[other]!, chars[a]!]
      return chars.join('')
    }
  }
}

/** What the scanner vouches for: exactly the canonical encoding of what it parses to. */
function reallyCanonical (text: string): boolean {
  try {
    return canonicalStringify(JSON.parse(text)) === text
  } catch {
    return false
  }
}

/** Canonical JSON the plain way: every member named, sorted and written one by one. */
function referenceCanonical (value: unknown, depth = 0): string {
  if (typeof value === 'string') return JSON.stringify(value)
  if (typeof value === 'boolean') return String(value)
  if (typeof value === 'number') {
    if (!Number.isFinite(value)) throw new Error('non-finite')
    return JSON.stringify(value)
  }
  if (value === null) return 'null'
  if (typeof value !== 'object') throw new Error(typeof value)
  if (depth >= MAX_JSON_DEPTH) throw new Error('too deep')
  if (Array.isArray(value)) return `[${Array.from(value, v => referenceCanonical(v, depth + 1)).join(',')}]`
  const members = Object.keys(value).sort().filter(k => (value as Record<string, unknown>)[k] !== undefined).map(k => {
    if (k === '__proto__') throw new Error('__proto__')
    return `${JSON.stringify(k)}:${referenceCanonical((value as Record<string, unknown>)[k], depth + 1)}`
  })
  return `{${members.join(',')}}`
}

/** The same members in another order (array-index names included, which V8 always lists first). */
function shuffled (rnd: () => number, value: unknown): unknown {
  if (Array.isArray(value)) return value.map(v => shuffled(rnd, v))
  if (typeof value !== 'object' || value === null) return value
  const entries = Object.entries(value)
  for (let i = entries.length - 1; i > 0; i--) {
    const j = Math.floor(rnd() * (i + 1))
    ;[entries[i], entries[j]] = [entries[j]!, entries[i]!]
  }
  if (rnd() < 0.3) entries.push([String(Math.floor(rnd() * 20)), randomValue(rnd, 3)])
  if (rnd() < 0.2) entries.push(['skipped', undefined])
  return Object.fromEntries(entries.map(([k, v]) => [k, shuffled(rnd, v)]))
}

describe('canonicalStringify', () => {
  it('writes what the plain member-by-member encoding writes (random values, members in any order)', () => {
    const rnd = prng(7)
    for (let i = 0; i < 3000; i++) {
      const value = shuffled(rnd, randomValue(rnd, 0))
      expect(canonicalStringify(value)).toBe(referenceCanonical(value))
    }
  })

  it('agrees on the edge cases, and refuses what the plain encoding refuses', () => {
    const cases: unknown[] = [
      { b: 1, a: { d: [{ z: 1, y: -0 }], c: null } },
      { 10: 'x', 9: 'y', a: 1 },
      { a: 1, 10: 'x', '!': 2 },
      { '': 0, ' ': 1, a: undefined },
      [1, 'two', { b: [], a: {} }],
      Object.assign(Object.create(null), { b: 1, a: 2 }),
      new Date(0),
      { b: 'é😀\u2028"', a: '\ud800' }
    ]
    for (const value of cases) expect(canonicalStringify(value)).toBe(referenceCanonical(value))
    const refused: unknown[] = [
      [1, undefined],
      new Array(3).fill(1, 1), // a hole at 0
      { a: Number.NaN },
      { a: () => {} },
      JSON.parse('{"b":1,"__proto__":{}}'),
      { a: 1n }
    ]
    for (const value of refused) expect(() => canonicalStringify(value)).toThrow()
    let deep: unknown = 1
    for (let i = 0; i <= MAX_JSON_DEPTH; i++) deep = { a: deep }
    expect(() => canonicalStringify(deep)).toThrow(/deeper/)
    expect(canonicalStringify((deep as { a: unknown }).a)).toBe(referenceCanonical((deep as { a: unknown }).a))
  })
})

describe('isCanonicalJsonText', () => {
  it('vouches for the canonical encoding of ordinary values', () => {
    const values = [
      { b: 1, a: [true, false, null], c: { z: 'x', y: '' } },
      [],
      {},
      'plain',
      'quote " backslash \\ slash / newline \n tab \t control \u0001 \u001f del \u007f',
      'é 😀 \u2028',
      { n: [0, -1, 1.5, -0.25, 1e21, 1.5e-7, 123456789012345, 2 ** 53, 5e-324] },
      { 'key with space': 1, key: 2, KEY: 3, ключ: 4, '😀': 5 }
    ]
    for (const value of values) {
      const text = canonicalStringify(value)
      expect(isCanonicalJsonText(text), text).toBe(true)
    }
  })

  it('does not vouch for other spellings, invalid JSON, or what the encoder refuses', () => {
    const cases = [
      ' {"a":1}', '{"a": 1}', '{"a":1}\n', '{"b":1,"a":2}', '{"a":1,"a":2}', '{"a":"\\/"}', '{"a":"\\u00E9"}',
      '{"a":"\\u0041"}', '{"a":"\\u000a"}', '{"a":"\\u001F"}', '{"a":"\u0001"}', '{"a":1.0}', '{"a":-0}',
      '{"a":1E5}', '{"a":1e21}', '{"a":01}', '{"a":.5}', '{"a":1.}', '{"a":1e}', '{"a":1e999}', '{"__proto__":1}',
      '{"a":{"__proto__":{}}}', '{"a":1}x', '{"a":tru}', '{"a":1,}', '[1,]', '{"a\\n":1}', '"\\ud83d\\ude00"',
      '"\\ud800"', '"unterminated', '', '{', '{"a"}', '{"a":1 }', '[1 ,2]', 'nul'
    ]
    for (const text of cases) expect(isCanonicalJsonText(text), JSON.stringify(text)).toBe(false)
  })

  it('bounds nesting like the encoder', () => {
    let value: unknown = 0
    for (let i = 0; i < MAX_JSON_DEPTH; i++) value = [value]
    const deepest = canonicalStringify(value)
    expect(isCanonicalJsonText(deepest)).toBe(true)
    expect(isCanonicalJsonText(`[${deepest}]`)).toBe(false)
    expect(isCanonicalJsonText('[[1]]', 1)).toBe(false)
  })

  it('whatever it vouches for is exactly the canonical encoding of its value (random values and edits)', () => {
    const rnd = prng(0x5eed)
    let vouched = 0
    let edited = 0
    for (let i = 0; i < 2000; i++) {
      const text = canonicalStringify(randomValue(rnd, 0))
      expect(reallyCanonical(text)).toBe(true)
      // only escapes in keys (and escaped surrogates, which these values have none of) are left unsure
      if (!text.includes('\\')) expect(isCanonicalJsonText(text), text).toBe(true)
      if (isCanonicalJsonText(text)) vouched++
      for (let k = 0; k < 5; k++) {
        const changed = mutate(rnd, text)
        if (isCanonicalJsonText(changed)) {
          expect(reallyCanonical(changed), JSON.stringify(changed)).toBe(true)
          if (changed !== text) edited++
        }
      }
    }
    // the fast path must actually be taken, and edits must reach it too
    expect(vouched).toBeGreaterThan(1000)
    expect(edited).toBeGreaterThan(50)
  })
})

const FROM = '12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN'

function validEnvelope (): Record<string, unknown> {
  return createEnvelope({ from: FROM, to: FROM, body: { text: 'hi', n: [1, 2] }, seq: 7, thread: 't1', replyTo: newId(), trace: newTrace() }) as unknown as Record<string, unknown>
}

const EDGE_VALUES: unknown[] = [
  undefined, null, '', 'x', 'x'.repeat(200), 0, -1, 1.5, 255, 256, 2 ** 53, Number.NaN, Number.POSITIVE_INFINITY, true, [], {},
  new Date(0), newId(), newId().toLowerCase(), 'I'.repeat(26), FROM, FROM.slice(1), newTrace(), `00-${'0'.repeat(32)}-${'1'.repeat(16)}-01`,
  'message', 'broadcast', 'nope', 'low', 'high', 'urgent', 1, 2
]

describe('isPlainEnvelope', () => {
  it('accepts what createEnvelope makes, as the schema does', () => {
    const e = validEnvelope()
    expect(isPlainEnvelope(e)).toBe(true)
    expect(EnvelopeSchema.safeParse(e).success).toBe(true)
    expect(isPlainEnvelope(JSON.parse(canonicalStringify(e)))).toBe(true)
  })

  it('leaves to the schema whatever it is not sure of', () => {
    const cases: Array<(e: Record<string, unknown>) => void> = [
      e => { e.thread = undefined },
      e => { e.extra = 1 },
      e => { e.hop = 256 },
      e => { e.seq = -1 },
      e => { e.expiresAt = (e.createdAt as number) - 1 },
      e => { e.body = new Date() },
      e => { delete e.body },
      e => { e.from = 'not-a-peer-id' },
      e => { e.v = 2 },
      e => { e.priority = 'urgent' },
      e => { e.to = '' }
    ]
    for (const change of cases) {
      const e = validEnvelope()
      change(e)
      expect(isPlainEnvelope(e), change.toString()).toBe(false)
    }
    class Envelope {}
    expect(isPlainEnvelope(Object.assign(new Envelope(), validEnvelope()))).toBe(false)
    expect(isPlainEnvelope(JSON.parse(`{"__proto__":{},${canonicalStringify(validEnvelope()).slice(1)}`))).toBe(false)
  })

  it('never accepts what the schema refuses (random edits of valid envelopes)', () => {
    const rnd = prng(0xe1)
    const keys = [...Object.keys(validEnvelope()), 'extra']
    let accepted = 0
    for (let i = 0; i < 3000; i++) {
      const e = validEnvelope()
      for (let k = 0, n = 1 + Math.floor(rnd() * 2); k < n; k++) {
        const key = keys[Math.floor(rnd() * keys.length)]!
        if (rnd() < 0.15) delete e[key]
        else e[key] = EDGE_VALUES[Math.floor(rnd() * EDGE_VALUES.length)]
      }
      if (isPlainEnvelope(e)) {
        accepted++
        expect(EnvelopeSchema.safeParse(e).success, JSON.stringify(e)).toBe(true)
      }
    }
    expect(accepted).toBeGreaterThan(100)
  })
})
