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
  return write(value, 0, maxDepth)
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
  try {
    return JSON.parse(text)
  } catch (err) {
    throw new MalformedMessageError(`not valid JSON: ${(err as Error).message}`)
  }
}
