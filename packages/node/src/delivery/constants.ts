/** Envelopes in flight on one delivery stream before waiting for acks. */
export const DELIVERY_WINDOW = 512
/** …and at most this many bytes of them. */
export const DELIVERY_WINDOW_BYTES = 4 * 1024 * 1024
/** A delivery stream with nothing in flight stays open this long for the next flush to reuse. */
export const DELIVERY_LINK_IDLE_MS = 2_000
/**
 * A flush that has everything answered waits this long for more to send before it ends: at a
 * steady stream of sends the next one comes within milliseconds, and a new flush would first
 * read the queue (behind the store's fsyncs, ~16 ms, during which nothing is sent).
 */
export const FLUSH_LINGER_MS = 100
/** Outbox entries read per round of a flush. */
export const DELIVERY_PAGE = 1024
/** …and about this many bytes of them at most (a page of large envelopes is read in part). */
export const DELIVERY_PAGE_BYTES = 8 * 1024 * 1024
/** First retry after a failed dial or a transient refusal; doubles up to the max. */
export const RETRY_MIN_MS = 1_000
export const RETRY_MAX_MS = 60_000
/** How often due retries and expiries are looked at. */
export const SWEEP_INTERVAL_MS = 1_000
/** How long one delivery stream may go without an answer before it is given up. */
export const DELIVERY_STREAM_TIMEOUT_MS = 30_000
/** Deliveries one peer may make to us per second (token bucket), and the burst. */
export const DEFAULT_DELIVERY_RATE = { rate: 10_000, burst: 20_000 }
/** Inbound delivery streams accepted per connection. */
export const MAX_DELIVER_STREAMS = 8
