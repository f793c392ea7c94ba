/**
 * Characters that can make peer-authored text lie on a screen or to a model: C0/C1 controls
 * (ANSI escapes start with one), zero-width characters, bidi embeddings/overrides/isolates
 * and the BOM. Newlines and tabs are kept by `stripUnsafe` unless asked otherwise.
 */
// biome-ignore lint/suspicious/noControlCharactersInRegex: matching control characters is the point
const UNSAFE = /[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff]/g
const LINE_BREAKS = /[\t\n\r]/g

/** Remove control, bidi and zero-width characters from peer-authored text. */
export function stripUnsafe (text: string, options: { keepNewlines?: boolean } = {}): string {
  const cleaned = text.replace(UNSAFE, '')
  return options.keepNewlines === false ? cleaned.replace(LINE_BREAKS, ' ') : cleaned
}

/** `stripUnsafe` every string inside a JSON value (keys included). */
export function stripUnsafeDeep<T> (value: T): T {
  if (typeof value === 'string') return stripUnsafe(value) as T
  if (Array.isArray(value)) return value.map(v => stripUnsafeDeep(v)) as T
  if (value !== null && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [stripUnsafe(k), stripUnsafeDeep(v)])) as T
  }
  return value
}
