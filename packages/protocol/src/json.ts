import { MAX_JSON_DEPTH } from './constants.js'
import { MalformedMessageError } from './errors.js'

export type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue }

const encoder = new TextEncoder()
const decoder = new TextDecoder('utf-8', { fatal: true })

/**
 * Canonical JSON (RFC 8785 style): object keys sorted by UTF-16 code units, no whitespace,
 * numbers as ECMAScript prints them, `undefined` members omitted. The same value always gives
 * the same string, so signatures over it are reproducible.
 */
export function canonicalStringify (value: unknown, maxDepth: number = MAX_JSON_DEPTH): string {
  const ordered = canonicalOrder(value, 0, maxDepth)
  return ordered === CAREFUL ? write(value, 0, maxDepth) : JSON.stringify(ordered)
}

/** What {@link canonicalOrder} returns when a value needs the careful writer. */
const CAREFUL = Symbol('careful')

/**
 * `value` with the members of every object in canonical order (the same value where they are
 * already), so that `JSON.stringify` writes its canonical text in one pass: that is the same text
 * when every object is plain and every number finite, and several times faster than building it
 * piece by piece, with a fraction of the garbage (every message is encoded once to be signed).
 * {@link CAREFUL} for anything else — too deep, `undefined` in an array, a `__proto__` member, a
 * non-plain object, members to reorder whose names V8 would put first (array indices) — which
 * {@link write} then encodes or refuses with a precise error.
 */
function canonicalOrder (value: unknown, depth: number, maxDepth: number): unknown {
  switch (typeof value) {
    case 'string':
    case 'boolean':
      return value
    case 'number':
      return Number.isFinite(value) ? value : CAREFUL
    case 'object':
      break
    default:
      return CAREFUL
  }
  if (value === null) return value
  if (depth >= maxDepth) return CAREFUL
  if (Array.isArray(value)) {
    if (Object.getPrototypeOf(value) !== Array.prototype) return CAREFUL
    let out: unknown[] | undefined
    for (let i = 0; i < value.length; i++) {
      const member: unknown = value[i]
      if (member === undefined) return CAREFUL
      const ordered = canonicalOrder(member, depth + 1, maxDepth)
      if (ordered === CAREFUL) return CAREFUL
      if (ordered !== member) {
        out ??= value.slice()
        out[i] = ordered
      }
    }
    return out ?? value
  }
  const proto = Object.getPrototypeOf(value)
  if (proto !== Object.prototype && proto !== null) return CAREFUL
  const record = value as Record<string, unknown>
  const keys = Object.keys(record)
  let out: Record<string, unknown> | undefined
  for (let i = 1; i < keys.length; i++) {
    if (keys[i - 1]! > keys[i]!) {
      keys.sort()
      // V8 lists array-index names first whatever the order they were added in
      for (const key of keys) if (isDigit(key.charCodeAt(0))) return CAREFUL
      out = {}
      break
    }
  }
  for (let i = 0; i < keys.length; i++) {
    const key = keys[i]!
    if (key === '__proto__') return CAREFUL
    const member = record[key]
    if (member === undefined) continue
    const ordered = canonicalOrder(member, depth + 1, maxDepth)
    if (ordered === CAREFUL) return CAREFUL
    if (ordered !== member && out === undefined) {
      // the members before this one are unchanged, and in order
      out = {}
      for (let j = 0; j < i; j++) {
        const earlier = record[keys[j]!]
        if (earlier !== undefined) out[keys[j]!] = earlier
      }
    }
    if (out !== undefined) out[key] = ordered
  }
  return out ?? value
}

function isDigit (code: number): boolean {
  return code >= 0x30 && code <= 0x39
}

export function canonicalEncode (value: unknown, maxDepth: number = MAX_JSON_DEPTH): Uint8Array {
  return encoder.encode(canonicalStringify(value, maxDepth))
}

function write (value: unknown, depth: number, maxDepth: number): string {
  switch (typeof value) {
    case 'string':
      return JSON.stringify(value)
    case 'boolean':
      return value ? 'true' : 'false'
    case 'number':
      if (!Number.isFinite(value)) {
        throw new MalformedMessageError(`cannot encode non-finite number ${value}`)
      }
      return JSON.stringify(value)
    case 'object': {
      if (value === null) {
        return 'null'
      }
      if (depth >= maxDepth) {
        throw new MalformedMessageError(`JSON nesting deeper than ${maxDepth}`)
      }
      if (Array.isArray(value)) {
        let out = '['
        for (let i = 0; i < value.length; i++) {
          // a hole is `undefined`, which cannot be encoded (it used to vanish, leaving `[,1]`)
          out += i === 0 ? write(value[i], depth + 1, maxDepth) : `,${write(value[i], depth + 1, maxDepth)}`
        }
        return `${out}]`
      }
      const record = value as Record<string, unknown>
      let out = '{'
      for (const key of Object.keys(record).sort()) {
        const member = record[key]
        if (member === undefined) {
          continue
        }
        if (key === '__proto__') {
          // JSON.parse makes it an own member, but schemas and object spreads drop it or turn it into a
          // prototype: what was signed would not be what the receiver reads
          throw new MalformedMessageError('cannot encode a "__proto__" member')
        }
        out += `${out.length === 1 ? '' : ','}${JSON.stringify(key)}:${write(member, depth + 1, maxDepth)}`
      }
      return `${out}}`
    }
    default:
      throw new MalformedMessageError(`cannot encode a ${typeof value} as JSON`)
  }
}

/**
 * Is `text` certainly the canonical JSON of a value, at most `maxDepth` deep: exactly what
 * `canonicalStringify(JSON.parse(text))` gives back? Checked in one pass, building nothing, so a
 * receiver can skip re-encoding every envelope it verifies. `false` means "not certain", not "not
 * canonical": a key with an escape, an escaped surrogate or a number in exponent form is left to
 * that re-encoding. `__proto__` keys are never canonical (see `canonicalStringify`).
 */
export function isCanonicalJsonText (text: string, maxDepth: number = MAX_JSON_DEPTH): boolean {
  return scanValue(text, 0, 0, maxDepth) === text.length
}

const NOT_CERTAIN = -1
const PROTO_KEY = '__proto__'

/** Where the canonical value starting at `i` ends, or {@link NOT_CERTAIN}. */
function scanValue (s: string, i: number, depth: number, maxDepth: number): number {
  const c = s.charCodeAt(i)
  if (c === 0x22) return scanString(s, i, true)
  if (c === 0x7b) return depth >= maxDepth ? NOT_CERTAIN : scanObject(s, i, depth, maxDepth)
  if (c === 0x5b) return depth >= maxDepth ? NOT_CERTAIN : scanArray(s, i, depth, maxDepth)
  if (c === 0x2d || (c >= 0x30 && c <= 0x39)) return scanNumber(s, i)
  if (s.startsWith('true', i)) return i + 4
  if (s.startsWith('false', i)) return i + 5
  if (s.startsWith('null', i)) return i + 4
  return NOT_CERTAIN
}

function scanObject (s: string, i: number, depth: number, maxDepth: number): number {
  i++
  if (s.charCodeAt(i) === 0x7d) return i + 1
  let lastKey = -1
  let lastKeyEnd = -1
  for (;;) {
    if (s.charCodeAt(i) !== 0x22) return NOT_CERTAIN
    // keys without escapes only: their text is their value, so the order can be checked on the text
    const keyEnd = scanString(s, i, false)
    if (keyEnd === NOT_CERTAIN) return NOT_CERTAIN
    if (keyEnd - i - 2 === PROTO_KEY.length && s.startsWith(PROTO_KEY, i + 1)) return NOT_CERTAIN
    // strictly ascending by UTF-16 code units, as `sort()` orders them: no duplicates either
    if (lastKey !== -1 && compareRanges(s, lastKey + 1, lastKeyEnd - 1, i + 1, keyEnd - 1) >= 0) return NOT_CERTAIN
    lastKey = i
    lastKeyEnd = keyEnd
    if (s.charCodeAt(keyEnd) !== 0x3a) return NOT_CERTAIN
    i = scanValue(s, keyEnd + 1, depth + 1, maxDepth)
    if (i === NOT_CERTAIN) return NOT_CERTAIN
    const next = s.charCodeAt(i)
    if (next === 0x7d) return i + 1
    if (next !== 0x2c) return NOT_CERTAIN
    i++
  }
}

function scanArray (s: string, i: number, depth: number, maxDepth: number): number {
  i++
  if (s.charCodeAt(i) === 0x5d) return i + 1
  for (;;) {
    i = scanValue(s, i, depth + 1, maxDepth)
    if (i === NOT_CERTAIN) return NOT_CERTAIN
    const next = s.charCodeAt(i)
    if (next === 0x5d) return i + 1
    if (next !== 0x2c) return NOT_CERTAIN
    i++
  }
}

/** Short escapes `JSON.stringify` writes (besides `\"` and `\\`): \b \t \n \f \r. */
const SHORT_ESCAPES = new Set([0x62, 0x74, 0x6e, 0x66, 0x72])
const SHORT_ESCAPED_CODES = new Set([0x08, 0x09, 0x0a, 0x0c, 0x0d])

/** A string exactly as `JSON.stringify` writes it; with `escapes` false, one without any escape. */
function scanString (s: string, i: number, escapes: boolean): number {
  for (let j = i + 1; j < s.length; j++) {
    const c = s.charCodeAt(j)
    if (c === 0x22) return j + 1
    if (c < 0x20) return NOT_CERTAIN
    if (c >= 0xd800 && c <= 0xdfff) {
      // literal surrogates only in pairs: `JSON.stringify` escapes a lone one
      const low = s.charCodeAt(j + 1)
      if (c > 0xdbff || !(low >= 0xdc00 && low <= 0xdfff)) return NOT_CERTAIN
      j++
      continue
    }
    if (c !== 0x5c) continue
    if (!escapes) return NOT_CERTAIN
    const e = s.charCodeAt(j + 1)
    if (e === 0x22 || e === 0x5c || SHORT_ESCAPES.has(e)) {
      j++
      continue
    }
    // \u00xx, lowercase hex, for a control character without a short escape; anything else
    // (`\/`, uppercase hex, an escaped surrogate, an escaped printable) is not what stringify writes
    if (e !== 0x75 || s.charCodeAt(j + 2) !== 0x30 || s.charCodeAt(j + 3) !== 0x30) return NOT_CERTAIN
    const hi = hexDigit(s.charCodeAt(j + 4))
    const lo = hexDigit(s.charCodeAt(j + 5))
    if (hi < 0 || hi > 1 || lo < 0 || SHORT_ESCAPED_CODES.has(hi * 16 + lo)) return NOT_CERTAIN
    j += 5
  }
  return NOT_CERTAIN
}

function hexDigit (c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30
  if (c >= 0x61 && c <= 0x66) return c - 0x61 + 10
  return -1
}

/** The longest prefix of digits, from `i`. */
function digitsEnd (s: string, i: number): number {
  while (i < s.length && s.charCodeAt(i) >= 0x30 && s.charCodeAt(i) <= 0x39) i++
  return i
}

/** A number token as ECMAScript prints it (`-0`, `1.0`, `1E3` and the like are not). */
function scanNumber (s: string, i: number): number {
  const start = i
  if (s.charCodeAt(i) === 0x2d) i++
  const intStart = i
  i = digitsEnd(s, i)
  const intDigits = i - intStart
  if (intDigits === 0 || (intDigits > 1 && s.charCodeAt(intStart) === 0x30)) return NOT_CERTAIN
  const c = s.charCodeAt(i)
  if (c !== 0x2e && c !== 0x65 && c !== 0x45) {
    // an integer of up to 15 digits prints as itself, except -0
    if (intDigits <= 15) return s.charCodeAt(start) === 0x2d && s.charCodeAt(intStart) === 0x30 ? NOT_CERTAIN : i
    return String(Number(s.slice(start, i))) === s.slice(start, i) ? i : NOT_CERTAIN
  }
  if (c === 0x2e) {
    const fracEnd = digitsEnd(s, i + 1)
    if (fracEnd === i + 1) return NOT_CERTAIN
    i = fracEnd
  }
  if (s.charCodeAt(i) === 0x65 || s.charCodeAt(i) === 0x45) {
    let expStart = i + 1
    const sign = s.charCodeAt(expStart)
    if (sign === 0x2b || sign === 0x2d) expStart++
    i = digitsEnd(s, expStart)
    if (i === expStart) return NOT_CERTAIN
  }
  const token = s.slice(start, i)
  return String(Number(token)) === token ? i : NOT_CERTAIN
}

/** Compare `s[a0, a1)` with `s[b0, b1)` by UTF-16 code units. */
function compareRanges (s: string, a0: number, a1: number, b0: number, b1: number): number {
  const n = Math.min(a1 - a0, b1 - b0)
  for (let k = 0; k < n; k++) {
    const d = s.charCodeAt(a0 + k) - s.charCodeAt(b0 + k)
    if (d !== 0) return d
  }
  return (a1 - a0) - (b1 - b0)
}

/**
 * Is `value` a JSON value: strings, finite numbers, booleans, null, and arrays and plain objects of
 * them, at most `maxDepth` deep? Checked in place, without building a copy (as a schema would):
 * bodies are checked on every send and receipt.
 */
export function isJsonValue (value: unknown, maxDepth: number = MAX_JSON_DEPTH): boolean {
  return check(value, 0, maxDepth)
}

function check (value: unknown, depth: number, maxDepth: number): boolean {
  switch (typeof value) {
    case 'string':
    case 'boolean':
      return true
    case 'number':
      return Number.isFinite(value)
    case 'object': {
      if (value === null) return true
      if (depth >= maxDepth) return false
      if (Array.isArray(value)) {
        // a hole reads as `undefined`, which is not JSON
        for (let i = 0; i < value.length; i++) if (!check(value[i], depth + 1, maxDepth)) return false
        return true
      }
      const proto = Object.getPrototypeOf(value)
      if (proto !== Object.prototype && proto !== null) return false
      for (const key of Object.keys(value)) {
        if (!check((value as Record<string, unknown>)[key], depth + 1, maxDepth)) return false
      }
      return true
    }
    default:
      return false
  }
}

/**
 * How deeply the JSON text nests, counted without building objects. Lets a decoder refuse a
 * hostile document (`[[[[…`) before `JSON.parse` recurses into it.
 */
export function jsonDepth (text: string): number {
  let depth = 0
  let max = 0
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i)
    if (c === 0x22) {
      // jump to the closing quote: one that is not escaped (preceded by an even run of backslashes)
      let q = i
      for (;;) {
        q = text.indexOf('"', q + 1)
        if (q < 0) return max // unterminated string: JSON.parse refuses it
        let backslashes = 0
        while (text.charCodeAt(q - 1 - backslashes) === 0x5c) backslashes++
        if (backslashes % 2 === 0) break
      }
      i = q
    } else if (c === 0x7b || c === 0x5b) {
      depth++
      if (depth > max) max = depth
    } else if (c === 0x7d || c === 0x5d) {
      depth--
    }
  }
  return max
}

/** Strict UTF-8 decoding (a leading BOM is dropped); throws `MalformedMessageError` on invalid UTF-8. */
export function decodeUtf8 (data: Uint8Array): string {
  try {
    return decoder.decode(data)
  } catch {
    throw new MalformedMessageError('not valid UTF-8')
  }
}

/** Decode UTF-8 JSON bytes, refusing invalid UTF-8, invalid JSON and nesting deeper than `maxDepth`. */
export function parseJson (data: Uint8Array | string, maxDepth: number = MAX_JSON_DEPTH): unknown {
  const text = typeof data === 'string' ? data : decodeUtf8(data)
  if (jsonDepth(text) > maxDepth) {
    throw new MalformedMessageError(`JSON nesting deeper than ${maxDepth}`)
  }
  return parseBoundedJson(text)
}

/** `JSON.parse` of text whose depth is already known to be bounded (see {@link isCanonicalJsonText}). */
export function parseBoundedJson (text: string): unknown {
  try {
    return JSON.parse(text)
  } catch (err) {
    throw new MalformedMessageError(`not valid JSON: ${(err as Error).message}`)
  }
}
