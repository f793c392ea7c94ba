import type { InboxEntry } from '@persona-mesh/store'
import type { JsonValue, MessageKind, Priority } from '@persona-mesh/protocol'

export { DeliveryService, type DeliveryInit, type DeliveryComponents, type AcceptDecision } from './delivery-service.js'
export * from './constants.js'

export interface SendOptions {
  /** Conversation id; replies keep it. */
  thread?: string
  /** Id of the message this answers. */
  replyTo?: string
  /** `high` goes before `normal` before `low` in a recipient's queue. @default 'normal' */
  priority?: Priority
  /** Lifetime in ms; undelivered by then it ends `expired`. @default 7 days */
  ttl?: number
  signal?: AbortSignal
}

/** Internal senders (tasks) also choose the kind and trace. */
export interface EnvelopeOptions extends SendOptions {
  kind?: MessageKind
  trace?: string
  hop?: number
}

export interface SendResult {
  id: string
  to: string
  status: 'queued'
}

export interface DeliveryOutcome {
  id: string
  to: string
  reason?: string
}

export interface DeliveryEvents {
  'message:delivered': CustomEvent<DeliveryOutcome>
  'message:failed': CustomEvent<DeliveryOutcome>
  'message:expired': CustomEvent<DeliveryOutcome>
  /** A new envelope landed in the inbox (or quarantine). */
  'message:received': CustomEvent<InboxEntry>
}

export type { JsonValue }
