import { z } from 'zod'
import { WIRE_VERSION } from './constants.js'
import { UlidSchema } from './ids.js'
import { parseJson } from './json.js'
import { MAX_NACK_MESSAGE, NackReasonSchema } from './nack.js'
import { decodeVersioned } from './seal.js'

/**
 * `/persona-mesh/deliver/1.1.0` (and 1.0.0, which takes no batch-sealed envelopes): the sender writes sealed envelopes, one per length-prefixed
 * frame, as raw bytes; the receiver answers each, in order, with a JSON result frame. `ack`
 * means the envelope is durably in the receiver's inbox (or already was: `duplicate`).
 */
export const DeliverAckSchema = z.strictObject({
  v: z.literal(WIRE_VERSION),
  t: z.literal('ack'),
  id: UlidSchema,
  status: z.enum(['stored', 'duplicate'])
})

export const DeliverNackSchema = z.strictObject({
  v: z.literal(WIRE_VERSION),
  t: z.literal('nack'),
  /** `null` when the refused frame could not be opened far enough to read its id. */
  id: UlidSchema.nullable(),
  reason: NackReasonSchema,
  message: z.string().max(MAX_NACK_MESSAGE).optional()
})

export const DeliverResultSchema = z.discriminatedUnion('t', [DeliverAckSchema, DeliverNackSchema])
export type DeliverResult = z.infer<typeof DeliverResultSchema>

const encoder = new TextEncoder()

export function encodeDeliverResult (result: DeliverResult): Uint8Array {
  return encoder.encode(JSON.stringify(result))
}

export function decodeDeliverResult (bytes: Uint8Array): DeliverResult {
  return decodeVersioned(DeliverResultSchema, parseJson(bytes), 'deliver result')
}
