import { z } from 'zod'
import { DEFAULT_MESSAGE_TTL_MS, MAX_METHOD_LENGTH, WIRE_VERSION } from './constants.js'
import { isUlid, newId, newTrace, PEER_ID_STRING, PeerIdStringSchema, TRACEPARENT, TraceSchema, UlidSchema } from './ids.js'
import { isJsonValue, type JsonValue } from './json.js'

export const MESSAGE_KINDS = [
  'message',
  'request',
  'response',
  'nack',
  'task.delegate',
  'task.status',
  'task.result',
  'task.cancel',
  'broadcast'
] as const

export const MessageKindSchema = z.enum(MESSAGE_KINDS)
export type MessageKind = z.infer<typeof MessageKindSchema>

/** Any JSON value, checked in place: `z.json()` would copy every body it checks. */
export const JsonBodySchema = z.custom<JsonValue>(value => isJsonValue(value), { message: 'not a JSON value (or nested too deeply)' })

export const PRIORITIES = ['low', 'normal', 'high'] as const
export const PrioritySchema = z.enum(PRIORITIES)
export type Priority = z.infer<typeof PrioritySchema>

const Timestamp = z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER)

/** A recipient: a PeerId for direct messages, `topic:<name>` for broadcasts. */
export const RecipientSchema = z.string().min(1).max(MAX_METHOD_LENGTH + 6)

/**
 * The one envelope every durable message travels in (DESIGN §5). Signed by `from` when sealed,
 * so provenance survives store-and-forward.
 */
export const EnvelopeSchema = z.strictObject({
  v: z.literal(WIRE_VERSION),
  id: UlidSchema,
  kind: MessageKindSchema,
  from: PeerIdStringSchema,
  to: RecipientSchema,
  thread: z.string().min(1).max(128).optional(),
  replyTo: UlidSchema.optional(),
  trace: TraceSchema,
  hop: z.number().int().min(0).max(255),
  priority: PrioritySchema,
  seq: z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER),
  createdAt: Timestamp,
  expiresAt: Timestamp,
  body: JsonBodySchema
}).refine(e => e.expiresAt >= e.createdAt, { message: 'expiresAt is before createdAt', path: ['expiresAt'] })

export type MessageEnvelope = Omit<z.infer<typeof EnvelopeSchema>, 'body'> & { body: JsonValue }

const ENVELOPE_KEYS: ReadonlySet<string> = new Set(['v', 'id', 'kind', 'from', 'to', 'thread', 'replyTo', 'trace', 'hop', 'priority', 'seq', 'createdAt', 'expiresAt', 'body'])
const KINDS: ReadonlySet<unknown> = new Set(MESSAGE_KINDS)
const PRIORITY_NAMES: ReadonlySet<unknown> = new Set(PRIORITIES)
const MAX_RECIPIENT_LENGTH = MAX_METHOD_LENGTH + 6

/**
 * Does `value` certainly pass {@link EnvelopeSchema}? The same rules, checked in place: every
 * envelope is checked when sealed and when opened, and the schema builds a copy of it and its issue
 * list each time. A strict subset of what the schema accepts (a member present as `undefined`, for
 * one, is left to it), so `false` only means "ask the schema", which then says what is wrong.
 */
export function isPlainEnvelope (value: unknown): value is MessageEnvelope {
  if (typeof value !== 'object' || value === null) return false
  const proto = Object.getPrototypeOf(value)
  if (proto !== Object.prototype && proto !== null) return false
  const e = value as Record<string, unknown>
  for (const key of Object.keys(e)) {
    if (!ENVELOPE_KEYS.has(key) || e[key] === undefined) return false
  }
  const { id, from, to, thread, replyTo, trace, hop, seq, createdAt, expiresAt } = e
  return e.v === WIRE_VERSION &&
    typeof id === 'string' && isUlid(id) &&
    KINDS.has(e.kind) &&
    typeof from === 'string' && PEER_ID_STRING.test(from) &&
    typeof to === 'string' && to.length >= 1 && to.length <= MAX_RECIPIENT_LENGTH &&
    (thread === undefined || (typeof thread === 'string' && thread.length >= 1 && thread.length <= 128)) &&
    (replyTo === undefined || (typeof replyTo === 'string' && isUlid(replyTo))) &&
    typeof trace === 'string' && TRACEPARENT.test(trace) &&
    Number.isSafeInteger(hop) && (hop as number) >= 0 && (hop as number) <= 255 &&
    PRIORITY_NAMES.has(e.priority) &&
    isTimestamp(seq) && isTimestamp(createdAt) && isTimestamp(expiresAt) &&
    (expiresAt as number) >= (createdAt as number) &&
    'body' in e && isJsonValue(e.body)
}

function isTimestamp (value: unknown): boolean {
  return Number.isSafeInteger(value) && (value as number) >= 0
}

export interface EnvelopeInit {
  kind?: MessageKind
  from: string
  to: string
  body: JsonValue
  seq: number
  id?: string
  thread?: string
  replyTo?: string
  trace?: string
  hop?: number
  priority?: Priority
  /** @default now */
  createdAt?: number
  /** Lifetime in ms. @default 7 days */
  ttl?: number
}

/**
 * Fill in the defaults of a new envelope: id, version, times, trace, priority. Its members are
 * added in canonical (sorted) order, so sealing it writes it as it is, without a sorted copy.
 */
export function createEnvelope (init: EnvelopeInit): MessageEnvelope {
  const createdAt = init.createdAt ?? Date.now()
  const envelope = {
    body: init.body,
    createdAt,
    expiresAt: createdAt + (init.ttl ?? DEFAULT_MESSAGE_TTL_MS),
    from: init.from,
    hop: init.hop ?? 0,
    id: init.id ?? newId(),
    kind: init.kind ?? 'message',
    priority: init.priority ?? 'normal'
  } as MessageEnvelope
  if (init.replyTo !== undefined) envelope.replyTo = init.replyTo
  envelope.seq = init.seq
  if (init.thread !== undefined) envelope.thread = init.thread
  envelope.to = init.to
  envelope.trace = init.trace ?? newTrace()
  envelope.v = WIRE_VERSION
  return envelope
}
