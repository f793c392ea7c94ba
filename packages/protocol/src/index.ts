/**
 * @packageDocumentation
 *
 * Persona Mesh wire formats. Pure: no I/O, no timers.
 *
 * @example
 * ```ts
 * import { createEnvelope, sealEnvelope, openEnvelope } from '@persona-mesh/protocol'
 *
 * const envelope = createEnvelope({ from: peerId.toString(), to: other.toString(), body: { text: 'hi' }, seq: 1 })
 * const bytes = await sealEnvelope(envelope, privateKey)
 * const { envelope: verified } = await openEnvelope(bytes) // throws on a bad signature, expiry, …
 * ```
 */
export * from './constants.js'
export * from './errors.js'
export * from './nack.js'
export { canonicalEncode, canonicalStringify, isCanonicalJsonText, isJsonValue, jsonDepth, parseJson, type JsonValue } from './json.js'
export { newId, isUlid, newTrace, childTrace, traceId, UlidSchema, PeerIdStringSchema, TraceSchema } from './ids.js'
export {
  createEnvelope,
  isPlainEnvelope,
  EnvelopeSchema,
  MessageKindSchema,
  PrioritySchema,
  MESSAGE_KINDS,
  PRIORITIES,
  type EnvelopeInit,
  type MessageEnvelope,
  type MessageKind,
  type Priority
} from './envelope.js'
export { sealEnvelope, sealEnvelopes, openEnvelope, readStoredEnvelope, decodeVersioned, type SealOptions, type OpenOptions, type OpenedEnvelope } from './seal.js'
export { sealPayload, openPayload, type OpenedPayload, type SignatureCheck } from './signed.js'
export { isBatchSealed } from './batch.js'
export { ed25519, libsodium, openssl, verifyOnThreadPool, sodiumModulePath, type Ed25519 } from './ed25519.js'
export * from './rpc.js'
export * from './card.js'
export * from './deliver.js'
export { stripUnsafe, stripUnsafeDeep } from './text.js'
export * from './task.js'
