import { z } from 'zod'

/** Every reason a peer may give for refusing a request or delivery. A closed set: unknown reasons are malformed. */
export const NACK_REASONS = [
  'overloaded',
  'incapable',
  'invalid_request',
  'unauthorized',
  'too_large',
  'expired',
  'unsupported_version',
  'loop_detected',
  'timeout',
  'internal_error'
] as const

export const NackReasonSchema = z.enum(NACK_REASONS)
export type NackReason = z.infer<typeof NackReasonSchema>

/** Longest free-text explanation sent with a NACK. */
export const MAX_NACK_MESSAGE = 1024
