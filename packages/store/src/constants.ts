import { DEFAULT_MESSAGE_TTL_MS } from '@persona-mesh/protocol'

/** Most entries queued for one recipient. */
export const DEFAULT_MAX_QUEUE_PER_PEER = 10_000

/** Most entries queued in the whole outbox. */
export const DEFAULT_MAX_QUEUE_TOTAL = 100_000

/** Dedupe keys live at least this long (and always until the envelope expires): the outbox TTL. */
export const DEFAULT_DEDUPE_TTL_MS = DEFAULT_MESSAGE_TTL_MS

/** Sequence numbers reserved per durable write by `outbox.allocateSeq`. */
export const DEFAULT_SEQ_BLOCK = 1000

/** Page size when a listing gives no `limit`. */
export const DEFAULT_PAGE_SIZE = 100

/** Largest page a listing returns. */
export const MAX_PAGE_SIZE = 10_000

/** Most entries a filtered inbox read looks at before it returns a (possibly short) page. */
export const MAX_SCAN = 20_000

/** File in the data directory that names its owner. */
export const OWNER_FILE = 'owner.json'
