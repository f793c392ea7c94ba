import type { JsonValue } from '@persona-mesh/protocol'

export { RpcService, type RpcServiceInit, type RpcComponents } from './rpc-service.js'
export * from './constants.js'

/** What a handler knows about the request it is answering. */
export interface RpcContext {
  /** The PeerId of the caller, authenticated by the connection's Noise handshake. */
  from: string
  method: string
  /** Aborted when the caller cancels, the deadline passes or the node stops. */
  signal: AbortSignal
}

/**
 * Answers one request. Return the response body; throw `NackError` to refuse with a reason;
 * anything else thrown becomes NACK `internal_error` (the message is not sent: no leaks).
 */
export type RpcHandler = (body: JsonValue, context: RpcContext) => JsonValue | Promise<JsonValue>

export interface HandleOptions {
  /** Longest a handler may run, also bounded by the caller's deadline. @default 30000 */
  timeout?: number
  /** Requests one peer may have running here at once; more get NACK `overloaded`. @default 128 */
  maxConcurrent?: number
}

export interface RequestOptions {
  signal?: AbortSignal
  /** How long to wait for the answer, dial included. @default 30000 */
  timeout?: number
}
