import { decodeTime, isValid } from 'ulid'
import { afterEach, describe, expect, it, vi } from 'vitest'
import { childTrace, isUlid, newId, newTrace, TraceSchema, traceId } from '../src/ids.js'

afterEach(() => {
  vi.restoreAllMocks()
})

describe('newId', () => {
  it('is a ULID of the current time', () => {
    const before = Date.now()
    const id = newId()
    const after = Date.now()
    expect(id).toMatch(/^[0-7][0-9A-HJKMNP-TV-Z]{25}$/)
    expect(isValid(id)).toBe(true)
    expect(isUlid(id)).toBe(true)
    expect(decodeTime(id)).toBeGreaterThanOrEqual(before)
    expect(decodeTime(id)).toBeLessThanOrEqual(after)
  })

  it('strictly increases, within a millisecond and when the clock goes back', () => {
    const now = Date.now() + 10_000
    const clock = vi.spyOn(Date, 'now')
    const ids: string[] = []
    clock.mockReturnValue(now)
    for (let i = 0; i < 1000; i++) ids.push(newId())
    clock.mockReturnValue(now - 5000)
    for (let i = 0; i < 100; i++) ids.push(newId())
    clock.mockReturnValue(now + 1)
    ids.push(newId())
    for (let i = 1; i < ids.length; i++) expect(ids[i]! > ids[i - 1]!).toBe(true)
    // the clock going back keeps the last time
    expect(decodeTime(ids[1099]!)).toBe(now)
    expect(decodeTime(ids[1100]!)).toBe(now + 1)
  })

  it('draws fresh random bits for each new millisecond', () => {
    const clock = vi.spyOn(Date, 'now')
    const base = Date.now() + 20_000
    const randoms = new Set<string>()
    for (let i = 0; i < 200; i++) {
      clock.mockReturnValue(base + i)
      randoms.add(newId().slice(10))
    }
    expect(randoms.size).toBe(200)
  })

  it('encodes the time like the ulid package does', () => {
    const clock = vi.spyOn(Date, 'now')
    for (const t of [Date.now() + 30_000, 2 ** 48 - 2]) {
      clock.mockReturnValue(t)
      expect(decodeTime(newId())).toBe(t)
    }
  })
})

describe('isUlid', () => {
  it('accepts what the ulid package accepts, lower case too, and nothing else', () => {
    expect(isUlid('01ARZ3NDEKTSV4RRFFQ69G5FAV')).toBe(true)
    expect(isUlid('01arz3ndektsv4rrffq69g5fav')).toBe(true)
    expect(isUlid('01ARZ3NDEKTSV4RRFFQ69G5FAU')).toBe(false)
    expect(isUlid('01ARZ3NDEKTSV4RRFFQ69G5FA')).toBe(false)
    expect(isUlid('01ARZ3NDEKTSV4RRFFQ69G5FAVV')).toBe(false)
    expect(isUlid('')).toBe(false)
  })
})

describe('traces', () => {
  it('newTrace is a fresh W3C traceparent each time; childTrace keeps its trace id', () => {
    const traces = Array.from({ length: 100 }, () => newTrace())
    for (const t of traces) expect(TraceSchema.safeParse(t).success).toBe(true)
    expect(new Set(traces.map(traceId)).size).toBe(100)
    const child = childTrace(traces[0]!)
    expect(TraceSchema.safeParse(child).success).toBe(true)
    expect(traceId(child)).toBe(traceId(traces[0]!))
    expect(child).not.toBe(traces[0])
  })
})
