import { isValid, monotonicFactory } from 'ulid'
import { z } from 'zod'
import { randomHex, takeRandom } from './random.js'

/**
 * ULIDs from the `ulid` library's monotonic factory, fed from the pooled random bytes: its default
 * source asks the OS for one byte per character (16 calls per id).
 */
const nextUlid = monotonicFactory(() => takeRandom(1)[0]! / 256)

/** A new ULID: sortable by creation time, strictly increasing within this process. */
export function newId (): string {
  return nextUlid()
}

/** What nearly every ULID looks like; anything else gets the library's (more lenient) check. */
const PLAIN_ULID = /^[0-9A-HJKMNP-TV-Z]{26}$/

export function isUlid (value: string): boolean {
  return value.length === 26 && (PLAIN_ULID.test(value) || isValid(value))
}

export const UlidSchema = z.string().length(26).refine(isUlid, 'not a ULID')

/** What a PeerId string looks like (base58btc multihash or CIDv1). */
export const PEER_ID_STRING = /^(?:[1-9A-HJ-NP-Za-km-z]{40,64}|b[a-z2-7]{50,80})$/

/** A libp2p PeerId in its string form. Checked strictly where it matters: at the signer. */
export const PeerIdStringSchema = z.string().regex(PEER_ID_STRING, 'not a PeerId')

/** A W3C `traceparent` (version 00): `00-<trace-id>-<parent-id>-<flags>`. */
export const TRACEPARENT = /^00-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}$/

export const TraceSchema = z.string().regex(TRACEPARENT, 'not a W3C traceparent')

/** Start a new trace: a fresh trace id and span id, sampled. */
export function newTrace (): string {
  return `00-${randomHex(16)}-${randomHex(8)}-01`
}

/** A child span in the same trace: same trace id, fresh span id. */
export function childTrace (parent: string): string {
  const traceId = parent.slice(3, 35)
  return `00-${traceId}-${randomHex(8)}-01`
}

/** The 32-hex trace id of a traceparent. */
export function traceId (trace: string): string {
  return trace.slice(3, 35)
}
