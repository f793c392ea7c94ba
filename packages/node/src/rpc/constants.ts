/** How long `request()` waits for an answer by default. */
export const DEFAULT_REQUEST_TIMEOUT_MS = 30_000
/** How long a handler may run by default (also bounded by the caller's deadline). */
export const DEFAULT_HANDLER_TIMEOUT_MS = 30_000
/** Requests one peer may have running in one handler at once before it gets NACK `overloaded`. */
export const DEFAULT_MAX_CONCURRENT_PER_PEER = 128
/** Outbound rpc streams kept open to one peer and shared by all requests to it. */
export const DEFAULT_STREAMS_PER_PEER = 4
/** In-flight requests on the least busy stream before another stream is opened. */
export const PIPELINE_DEPTH = 8
/** Inbound rpc streams accepted per connection. */
export const MAX_INBOUND_STREAMS = 32
/** Outbound rpc streams allowed per connection. */
export const MAX_OUTBOUND_STREAMS = 32
