import { MESSAGE_KINDS, PRIORITIES, TASK_STATES } from '@persona-mesh/protocol'
import { z } from 'zod'
import { capBody, PeerRefSchema, sanitizeDeep, sanitizeLine, wrap, wrappedSchema, WrappedSchema } from './untrusted.js'
import type { PeerRef, Wrapped } from './untrusted.js'
import type { InboxEntry, Mesh, TaskInfo } from '@persona-mesh/node'
import type { Card } from '@persona-mesh/protocol'

/** What every tool result carries, so an agent notices mail on any call. */
export const InboxStateSchema = z.object({
  unread: z.number().int().describe('messages not acked yet'),
  cursor: z.string().nullable().describe('position of the newest message this server has seen arrive; give it to mesh_wait or mesh_inbox as cursor to get only newer ones')
})
export type InboxState = z.infer<typeof InboxStateSchema>

export const MessageSchema = z.object({
  id: z.string(),
  cursor: z.string().describe('inbox position of this message'),
  kind: z.enum(MESSAGE_KINDS),
  priority: z.enum(PRIORITIES),
  sent_at: z.string(),
  received_at: z.string(),
  acked: z.boolean(),
  truncated: z.boolean().describe('true when content.body holds only the start of the body; fetch it whole with mesh_inbox {id}'),
  size: z.number().int().describe('bytes of the whole body as JSON'),
  task_id: z.string().optional().describe('for task.* messages: the task, for mesh_task / mesh_task_update'),
  content: wrappedSchema({
    thread: z.string().optional(),
    reply_to: z.string().optional(),
    topic: z.string().optional()
  })
})
export type MessageView = z.infer<typeof MessageSchema>

export const TaskSchema = z.object({
  id: z.string(),
  direction: z.enum(['incoming', 'outgoing']).describe('outgoing: we delegated it; incoming: a peer asked us'),
  peer: PeerRefSchema.describe('the worker (outgoing) or the delegator (incoming)'),
  capability: z.string(),
  status: z.enum(TASK_STATES),
  progress: z.number().nullable(),
  mode: z.enum(['handler', 'agent']).nullable().describe('incoming: run by code, or waiting for the agent (mesh_task_update)'),
  deadline: z.string(),
  created_at: z.string(),
  updated_at: z.string(),
  error_reason: z.string().nullable(),
  ours: z.unknown().describe('what this persona wrote: the input (outgoing) or our result and message (incoming)'),
  theirs: WrappedSchema.nullable().describe('what the peer wrote: result, error and status message (outgoing) or the input (incoming)')
})
export type TaskView = z.infer<typeof TaskSchema>

const ULID = /^[0-9A-HJKMNP-TV-Z]{26}$/

export function iso (ms: number | undefined): string {
  return typeof ms === 'number' && Number.isFinite(ms) && ms >= 0 ? new Date(ms).toISOString() : ''
}

/** PeerId → name from verified cards; refreshed on `peer:card` and, at most every 2 s, on a miss. */
class Names {
  private readonly names = new Map<string, string>()
  private refreshing?: Promise<void>
  private lastRefresh = 0

  constructor (private readonly mesh: Mesh) {}

  readonly onCard = (evt: CustomEvent<Card>): void => {
    this.names.set(evt.detail.peerId, sanitizeLine(evt.detail.name, 64))
  }

  async ref (peerId: string): Promise<PeerRef> {
    if (peerId === this.mesh.peerId) return { peerId, name: this.mesh.name, verified: true }
    if (!this.names.has(peerId) && Date.now() - this.lastRefresh > 2000) await this.refresh()
    const name = this.names.get(peerId)
    return name !== undefined ? { peerId, name, verified: true } : { peerId, name: null, verified: false }
  }

  /** A card we hold anyway names its peer. */
  learn (card: Card): void {
    this.names.set(card.peerId, sanitizeLine(card.name, 64))
  }

  private async refresh (): Promise<void> {
    this.refreshing ??= (async () => {
      try {
        for (const card of await this.mesh.cards()) this.learn(card)
      } catch {
        // the name is a courtesy; the PeerId is what identifies
      } finally {
        this.lastRefresh = Date.now()
        this.refreshing = undefined
      }
    })()
    await this.refreshing
  }
}

export interface FacadeInit {
  maxBodyBytes: number
  progressInterval: number
  maxWaitSeconds: number
  log: (message: string) => void
}

/** The state the tools, resources and prompts share: names, the newest cursor, rendering. */
export class Facade {
  readonly names: Names
  private latest: string | null = null

  constructor (readonly mesh: Mesh, readonly init: FacadeInit) {
    this.names = new Names(mesh)
  }

  private readonly onReceived = (evt: CustomEvent<InboxEntry>): void => {
    if (!evt.detail.quarantined) this.latest = evt.detail.cursor
  }

  start (): void {
    // until a message arrives, the newest entry already in the inbox is the cursor
    this.mesh.status().then((status) => { this.latest ??= status.inbox.cursor ?? null }, () => {})
    this.mesh.addEventListener('message:received', this.onReceived)
    this.mesh.addEventListener('peer:card', this.names.onCard)
  }

  stop (): void {
    this.mesh.removeEventListener('message:received', this.onReceived)
    this.mesh.removeEventListener('peer:card', this.names.onCard)
  }

  async inbox (unread?: number): Promise<InboxState> {
    return { unread: unread ?? await this.mesh.inbox.unread(), cursor: this.latest }
  }

  /** An inbox entry for the model: its metadata, and everything the sender wrote wrapped and capped. */
  async message (entry: InboxEntry, maxBytes = this.init.maxBodyBytes): Promise<MessageView> {
    const capped = capBody(entry.body, maxBytes)
    const taskId = entry.kind.startsWith('task.') ? (entry.body as { taskId?: unknown } | null)?.taskId : undefined
    return {
      id: entry.id,
      cursor: entry.cursor,
      kind: entry.kind,
      priority: entry.priority,
      sent_at: iso(entry.createdAt),
      received_at: iso(entry.receivedAt),
      acked: entry.acked,
      truncated: capped.truncated,
      size: capped.size,
      ...(typeof taskId === 'string' && ULID.test(taskId) ? { task_id: taskId } : {}),
      content: wrap(await this.names.ref(entry.from), capped.body, {
        ...(entry.thread !== undefined ? { thread: sanitizeLine(entry.thread) } : {}),
        ...(entry.replyTo !== undefined ? { reply_to: sanitizeLine(entry.replyTo) } : {}),
        ...(entry.topic !== undefined ? { topic: sanitizeLine(entry.topic) } : {})
      })
    }
  }

  /** A task: our side as is, the peer's side wrapped. */
  async task (info: TaskInfo): Promise<TaskView> {
    const peer = await this.names.ref(info.peer)
    const outgoing = info.direction === 'outgoing'
    let ours: unknown
    let theirs: Wrapped | null
    if (outgoing) {
      ours = { input: info.input }
      const report: Record<string, unknown> = {}
      if (info.result !== undefined) report.result = info.result
      if (info.error !== undefined) report.error = info.error.message
      if (info.message !== undefined) report.message = info.message
      theirs = Object.keys(report).length > 0 ? wrap(peer, capBody(report, this.init.maxBodyBytes * 4).body) : null
    } else {
      ours = {
        ...(info.result !== undefined ? { result: info.result } : {}),
        ...(info.message !== undefined ? { message: info.message } : {})
      }
      theirs = wrap(peer, capBody({ input: info.input }, this.init.maxBodyBytes * 4).body)
    }
    return {
      id: info.id,
      direction: info.direction,
      peer,
      capability: sanitizeLine(info.capability, 64),
      status: info.status,
      progress: info.progress ?? null,
      mode: info.mode ?? null,
      deadline: iso(info.deadline),
      created_at: iso(info.createdAt),
      updated_at: iso(info.updatedAt),
      error_reason: info.error?.reason ?? null,
      ours,
      theirs
    }
  }

  /** A peer's verified card, every field of which the peer wrote. */
  async card (card: Card): Promise<Wrapped> {
    this.names.learn(card)
    const { v: _v, ...fields } = card
    return wrap(await this.names.ref(card.peerId), sanitizeDeep(fields))
  }
}
