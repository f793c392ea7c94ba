import { z } from 'zod'
import { MAX_METHOD_LENGTH, WIRE_VERSION } from './constants.js'
import { MalformedMessageError } from './errors.js'
import { parseJson } from './json.js'
import { MAX_NACK_MESSAGE, NackReasonSchema } from './nack.js'
import { JsonBodySchema } from './envelope.js'
import { decodeVersioned } from './seal.js'
import type { JsonValue } from './json.js'
import type { NackReason } from './nack.js'

/**
 * Frames of `/persona-mesh/rpc/1.0.0`. One stream carries many requests at once; each frame is
 * tagged with the request id its opener chose, so answers may come back in any order.
 * Frames are not signed: the Noise channel already authenticates the remote peer.
 */
const RequestId = z.number().int().min(0).max(0xffffffff)

/** Longest deadline a request may ask for. */
export const MAX_RPC_TIMEOUT_MS = 24 * 60 * 60 * 1000

export const RpcRequestFrameSchema = z.strictObject({
  v: z.literal(WIRE_VERSION),
  t: z.literal('req'),
  id: RequestId,
  method: z.string().min(1).max(MAX_METHOD_LENGTH),
  /** How long the caller will wait, in ms; the handler is bounded by it. */
  timeout: z.number().int().positive().max(MAX_RPC_TIMEOUT_MS),
  body: JsonBodySchema
})

export const RpcCancelFrameSchema = z.strictObject({
  v: z.literal(WIRE_VERSION),
  t: z.literal('cancel'),
  id: RequestId
})

export const RpcResponseFrameSchema = z.strictObject({
  v: z.literal(WIRE_VERSION),
  t: z.literal('res'),
  id: RequestId,
  body: JsonBodySchema
})

export const RpcNackFrameSchema = z.strictObject({
  v: z.literal(WIRE_VERSION),
  t: z.literal('nack'),
  /** `null` when the refused frame could not be tied to a request (undecodable, oversized). */
  id: RequestId.nullable(),
  reason: NackReasonSchema,
  message: z.string().max(MAX_NACK_MESSAGE).optional()
})

export const RpcFrameSchema = z.discriminatedUnion('t', [
  RpcRequestFrameSchema,
  RpcCancelFrameSchema,
  RpcResponseFrameSchema,
  RpcNackFrameSchema
])

export type RpcRequestFrame = Omit<z.infer<typeof RpcRequestFrameSchema>, 'body'> & { body: JsonValue }
export type RpcResponseFrame = Omit<z.infer<typeof RpcResponseFrameSchema>, 'body'> & { body: JsonValue }
export type RpcCancelFrame = z.infer<typeof RpcCancelFrameSchema>
export type RpcNackFrame = z.infer<typeof RpcNackFrameSchema>
export type RpcFrame = RpcRequestFrame | RpcCancelFrame | RpcResponseFrame | RpcNackFrame

const encoder = new TextEncoder()

/**
 * What `decodeRpcFrame` checks: the same frames, except that `body` is not walked again. It
 * comes out of `parseJson`, so it is JSON by construction and its depth is already bounded.
 */
const ParsedBody = z.custom<JsonValue>(value => value !== undefined, { message: 'body is required' })
const ParsedRpcFrameSchema = z.discriminatedUnion('t', [
  RpcRequestFrameSchema.extend({ body: ParsedBody }),
  RpcCancelFrameSchema,
  RpcResponseFrameSchema.extend({ body: ParsedBody }),
  RpcNackFrameSchema
])

export function encodeRpcFrame (frame: RpcFrame): Uint8Array {
  return encoder.encode(JSON.stringify(frame))
}

/** Decode one rpc frame. Throws `MalformedMessageError` or `UnsupportedVersionError`. */
export function decodeRpcFrame (bytes: Uint8Array): RpcFrame {
  return decodeVersioned(ParsedRpcFrameSchema, parseJson(bytes), 'rpc frame') as RpcFrame
}

/**
 * The request id of a frame that failed to decode, when one can be recovered, so the refusal
 * can be tied to the request that caused it.
 */
export function salvageRequestId (bytes: Uint8Array): number | null {
  try {
    const frame = parseJson(bytes)
    const id = (frame as { id?: unknown } | null)?.id
    return RequestId.safeParse(id).success ? (id as number) : null
  } catch (err) {
    if (err instanceof MalformedMessageError) return null
    throw err
  }
}

export function nackFrame (id: number | null, reason: NackReason, message?: string): RpcNackFrame {
  const frame: RpcNackFrame = { v: WIRE_VERSION, t: 'nack', id, reason }
  if (message !== undefined) frame.message = message.slice(0, MAX_NACK_MESSAGE)
  return frame
}
