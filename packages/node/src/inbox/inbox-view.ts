import { setMaxListeners } from 'node:events'
import { AbortError, InvalidArgumentError } from '../errors.js'
import type { InboxEntry, InboxQuery, MeshStore, Page } from '@persona-mesh/store'
import type { MessageKind } from '@persona-mesh/protocol'

/** How long `wait()` waits by default, and at most. */
export const DEFAULT_WAIT_MS = 30_000
export const MAX_WAIT_MS = 60 * 60 * 1000
/** Most entries one read returns. */
export const MAX_READ_LIMIT = 1000

export interface InboxFilter {
  from?: string
  thread?: string
  kind?: MessageKind | MessageKind[]
  topic?: string
}

export interface InboxReadOptions extends InboxFilter {
  /** Continue after this position (from `nextCursor`). */
  cursor?: string
  /** Only messages not acked yet. @default false */
  unreadOnly?: boolean
  /** Read the quarantine (unknown senders) instead. @default false */
  quarantined?: boolean
  /** @default 50 */
  limit?: number
}

export interface InboxWaitOptions extends InboxFilter {
  /** Only messages after this position; without it, any unread message matches. */
  cursor?: string
  /** @default 30000 */
  timeout?: number
  /** @default 20 */
  limit?: number
  signal?: AbortSignal
}

export interface InboxPage {
  entries: InboxEntry[]
  nextCursor?: string
  more: boolean
}

export interface InboxWaitResult {
  messages: InboxEntry[]
  nextCursor?: string
  timedOut: boolean
}

/** The inbox as `Mesh` exposes it: peek with cursors, ack, count, and long-poll. */
export interface MeshInbox {
  read(options?: InboxReadOptions): Promise<InboxPage>
  get(id: string): Promise<InboxEntry | undefined>
  ack(ids: string[]): Promise<Array<'acked' | 'already-acked' | 'unknown'>>
  unread(): Promise<number>
  /**
   * Resolve at once with matching unread messages if there are any, else with the first
   * matching message that arrives, else `{ messages: [], timedOut: true }` after `timeout`.
   */
  wait(options?: InboxWaitOptions): Promise<InboxWaitResult>
}

function matches (entry: InboxEntry, filter: InboxFilter): boolean {
  if (filter.from !== undefined && entry.from !== filter.from) return false
  if (filter.thread !== undefined && entry.thread !== filter.thread) return false
  if (filter.topic !== undefined && entry.topic !== filter.topic) return false
  if (filter.kind !== undefined) {
    const kinds = Array.isArray(filter.kind) ? filter.kind : [filter.kind]
    if (!kinds.includes(entry.kind)) return false
  }
  return true
}

function query (filter: InboxFilter, extra: InboxQuery): InboxQuery {
  const q: InboxQuery = { ...extra }
  if (filter.from !== undefined) q.from = filter.from
  if (filter.thread !== undefined) q.thread = filter.thread
  if (filter.topic !== undefined) q.topic = filter.topic
  if (filter.kind !== undefined) q.kind = filter.kind
  return q
}

/**
 * `MeshInbox` over the store, woken by the node's `message:received` events. `subscribe`
 * registers a listener for new entries and returns its remover.
 */
export function createInboxView (store: () => MeshStore, subscribe: (listener: (entry: InboxEntry) => void) => () => void): MeshInbox {
  const read = async (options: InboxReadOptions = {}): Promise<InboxPage> => {
    const limit = options.limit ?? 50
    if (!(limit >= 1 && limit <= MAX_READ_LIMIT)) throw new InvalidArgumentError(`limit must be 1-${MAX_READ_LIMIT}`)
    const page: Page<InboxEntry> = await store().inbox.read(query(options, {
      limit,
      ...(options.cursor !== undefined ? { cursor: options.cursor } : {}),
      ...(options.unreadOnly !== undefined ? { unreadOnly: options.unreadOnly } : {}),
      ...(options.quarantined !== undefined ? { quarantined: options.quarantined } : {})
    }))
    return page
  }

  return {
    read,
    get: async (id) => store().inbox.get(id),
    ack: async (ids) => store().inbox.ack(ids),
    unread: async () => store().inbox.unread(),
    wait: async (options = {}) => {
      const timeout = options.timeout ?? DEFAULT_WAIT_MS
      if (!(timeout >= 0 && timeout <= MAX_WAIT_MS)) throw new InvalidArgumentError(`timeout must be 0-${MAX_WAIT_MS} ms`)
      const limit = options.limit ?? 20
      if (options.signal?.aborted === true) throw new AbortError('wait aborted')
      // listen first, then look: a message landing in between is not missed
      const arrived = Promise.withResolvers<void>()
      // an abort may land while we are still reading the inbox, before anyone awaits this
      arrived.promise.catch(() => {})
      const unsubscribe = subscribe((entry) => {
        if (!entry.quarantined && matches(entry, options)) arrived.resolve()
      })
      const timer = setTimeout(() => { arrived.resolve() }, timeout)
      const onAbort = (): void => { arrived.reject(new AbortError('wait aborted')) }
      if (options.signal !== undefined) {
        setMaxListeners(Infinity, options.signal)
        options.signal.addEventListener('abort', onAbort, { once: true })
      }
      try {
        const look = async (): Promise<InboxPage> => read({ ...options, unreadOnly: options.cursor === undefined, limit, ...(options.cursor !== undefined ? { cursor: options.cursor } : {}) })
        const first = await look()
        if (first.entries.length > 0) return { messages: first.entries, ...cursorOf(first, options.cursor), timedOut: false }
        await arrived.promise
        const second = await look()
        return { messages: second.entries, ...cursorOf(second, options.cursor), timedOut: second.entries.length === 0 }
      } finally {
        clearTimeout(timer)
        unsubscribe()
        options.signal?.removeEventListener('abort', onAbort)
      }
    }
  }
}

function cursorOf (page: InboxPage, previous?: string): { nextCursor?: string } {
  const next = page.nextCursor ?? previous
  return next !== undefined ? { nextCursor: next } : {}
}
