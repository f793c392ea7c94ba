import {
  canonicalEncode,
  canonicalStringify,
  isJsonValue,
  jsonDepth,
  MAX_JSON_DEPTH,
  MalformedMessageError,
  parseJson
} from '@persona-mesh/protocol'
import { afterEach, describe, expect, it, vi } from 'vitest'

const text = (bytes: Uint8Array): string => new TextDecoder().decode(bytes)

/** `depth` arrays nested inside each other: `[[[…]]]`. */
function nested (depth: number): unknown {
  let value: unknown = 0
  for (let i = 0; i < depth; i++) value = [value]
  return value
}

function expectMalformed (fn: () => unknown, message?: RegExp): void {
  let thrown: unknown
  try {
    fn()
  } catch (err) {
    thrown = err
  }
  expect(thrown).toBeInstanceOf(MalformedMessageError)
  expect((thrown as Error).name).toBe('MalformedMessageError')
  if (message !== undefined) expect((thrown as Error).message).toMatch(message)
}

describe('canonical encoding', () => {
  it('gives identical bytes for the same value whatever the key order', () => {
    const a = { b: 1, a: { d: [1, { z: true, y: null }], c: 'x' } }
    const b = { a: { c: 'x', d: [1, { y: null, z: true }] }, b: 1 }
    expect(canonicalEncode(a)).toEqual(canonicalEncode(b))
    expect(canonicalStringify(a)).toBe('{"a":{"c":"x","d":[1,{"y":null,"z":true}]},"b":1}')
    expect(text(canonicalEncode(a))).toBe(canonicalStringify(a))
  })

  it('sorts keys by UTF-16 code units, not by code points', () => {
    // U+1F600 is the surrogate pair D83D DE00, which sorts before U+FB00 in UTF-16 but after it by code point
    const value = { '\uFB00': 4, '\u{1F600}': 3, é: 2, z: 1 }
    expect(canonicalStringify(value)).toBe('{"z":1,"é":2,"\u{1F600}":3,"\uFB00":4}')
  })

  it('leaves no whitespace and prints numbers as ECMAScript does', () => {
    expect(canonicalStringify({ a: [1, 2], b: { c: 'd e' } })).toBe('{"a":[1,2],"b":{"c":"d e"}}')
    expect(canonicalStringify([-0, 0.1, 1e21, 1e-7, 100])).toBe('[0,0.1,1e+21,1e-7,100]')
    expect(canonicalStringify('a"b\\c\n')).toBe('"a\\"b\\\\c\\n"')
  })

  it('omits undefined members', () => {
    expect(canonicalStringify({ a: undefined, b: 1, c: { d: undefined } })).toBe('{"b":1,"c":{}}')
    expect(canonicalEncode({ b: 1, a: undefined })).toEqual(canonicalEncode({ b: 1 }))
  })

  it.each([
    ['NaN', Number.NaN],
    ['Infinity', Number.POSITIVE_INFINITY],
    ['-Infinity', Number.NEGATIVE_INFINITY]
  ])('refuses %s, even deep inside', (_, n) => {
    expectMalformed(() => canonicalEncode(n), /non-finite/)
    expectMalformed(() => canonicalEncode({ a: [1, { b: n }] }), /non-finite/)
  })

  it.each([
    ['a bigint', 1n],
    ['a function', () => 1],
    ['a symbol', Symbol('s')],
    ['undefined at the top', undefined],
    ['undefined in an array', [1, undefined]],
    ['a hole in an array (it used to vanish: `[,1]`)', Object.assign(new Array<number>(2), { 1: 1 })]
  ])('refuses %s', (_, value) => {
    expectMalformed(() => canonicalEncode(value))
  })

  it(`accepts ${MAX_JSON_DEPTH} levels of nesting and refuses ${MAX_JSON_DEPTH + 1}`, () => {
    expect(canonicalStringify(nested(MAX_JSON_DEPTH))).toBe(`${'['.repeat(MAX_JSON_DEPTH)}0${']'.repeat(MAX_JSON_DEPTH)}`)
    expectMalformed(() => canonicalEncode(nested(MAX_JSON_DEPTH + 1)), /deeper than 64/)
    expectMalformed(() => canonicalEncode({ a: { b: { c: {} } } }, 3), /deeper than 3/)
    expect(canonicalStringify({ a: { b: {} } }, 3)).toBe('{"a":{"b":{}}}')
  })

  it('agrees with parseJson on the depth limit', () => {
    const deepest = canonicalStringify(nested(MAX_JSON_DEPTH))
    expect(parseJson(deepest)).toEqual(nested(MAX_JSON_DEPTH))
    expect(jsonDepth(deepest)).toBe(MAX_JSON_DEPTH)
  })

  it('refuses a "__proto__" member, which the receiving schema would silently drop', () => {
    const value = JSON.parse('{"a":1,"__proto__":{"admin":true}}') as unknown
    expectMalformed(() => canonicalEncode(value), /__proto__/)
  })
})

describe('jsonDepth', () => {
  it.each([
    ['1', 0],
    ['"x"', 0],
    ['[]', 1],
    ['{}', 1],
    ['{"a":[{}]}', 3],
    ['[[],[[]],[]]', 3],
    ['"[[[[{{{{"', 0],
    ['"a\\"[[[["', 0],
    ['["\\\\",[[]]]', 3],
    ['{"a":"]]]]","b":[[1]]}', 3]
  ])('%s nests %i deep', (input, depth) => {
    expect(jsonDepth(input)).toBe(depth)
  })
})

describe('parseJson', () => {
  afterEach(() => { vi.restoreAllMocks() })

  it('parses bytes and strings', () => {
    expect(parseJson(new TextEncoder().encode('{"a":[1,"é"]}'))).toEqual({ a: [1, 'é'] })
    expect(parseJson('[true,null]')).toEqual([true, null])
  })

  it('refuses a hostile [[[[… before JSON.parse sees it', () => {
    const parse = vi.spyOn(JSON, 'parse')
    const hostile = '['.repeat(1_000_000)
    expectMalformed(() => parseJson(hostile), /deeper than 64/)
    expectMalformed(() => parseJson(new TextEncoder().encode(`${'{"a":'.repeat(65)}1${'}'.repeat(65)}`)), /deeper than 64/)
    expect(parse).not.toHaveBeenCalled()
  })

  it('honours a custom depth', () => {
    expect(parseJson('[[1]]', 2)).toEqual([[1]])
    expectMalformed(() => parseJson('[[[1]]]', 2), /deeper than 2/)
  })

  it.each([
    ['a lone continuation byte', [0x22, 0x80, 0x22]],
    ['0xff', [0x22, 0xff, 0x22]],
    ['an overlong "/"', [0x22, 0xc0, 0xaf, 0x22]],
    ['an encoded surrogate', [0x22, 0xed, 0xa0, 0x80, 0x22]],
    ['a truncated sequence', [0x22, 0xe2, 0x82]]
  ])('refuses invalid UTF-8: %s', (_, bytes) => {
    expectMalformed(() => parseJson(new Uint8Array(bytes)), /UTF-8/)
  })

  it.each([
    ['an empty document', ''],
    ['a missing value', '{"a":}'],
    ['a trailing comma', '[1,]'],
    ['trailing garbage', '{} x'],
    ['single quotes', "{'a':1}"],
    ['NaN', 'NaN'],
    ['unbalanced brackets', ']]]]'],
    ['an unterminated string', '"abc']
  ])('refuses invalid JSON: %s', (_, input) => {
    expectMalformed(() => parseJson(input), /not valid JSON/)
    expectMalformed(() => parseJson(new TextEncoder().encode(input)), /not valid JSON/)
  })
})

describe('isJsonValue', () => {
  it('accepts what JSON.parse can give, nested, and objects without a prototype', () => {
    for (const v of [null, true, 0, -1.5, '', 'x', [], {}, [1, 'a', null, [{}]], { a: { b: [true, { c: 'd' }] } }, JSON.parse('{"__proto__":{"x":1}}'), Object.create(null)]) {
      expect(isJsonValue(v)).toBe(true)
    }
  })

  it('refuses what JSON cannot carry: non-finite numbers, undefined, holes, functions, symbols, bigints, class instances', () => {
    const holey = Object.assign(new Array(3), { 0: 1, 2: 2 })
    for (const v of [Number.NaN, Infinity, undefined, holey, [undefined], { a: undefined }, () => 1, Symbol('s'), 1n, new Date(0), new Map(), new Uint8Array(2), { nested: [new Date(0)] }]) {
      expect(isJsonValue(v)).toBe(false)
    }
  })

  it('refuses nesting past the limit, and so a cycle', () => {
    let deep: unknown = 'leaf'
    for (let i = 0; i < 64; i++) deep = [deep]
    expect(isJsonValue(deep)).toBe(true)
    expect(isJsonValue([deep])).toBe(false)
    const cycle: Record<string, unknown> = {}
    cycle.self = cycle
    expect(isJsonValue(cycle)).toBe(false)
  })
})
