import { logger } from '@libp2p/logger'
import { TypedEventEmitter } from 'main-event'
import {
  childTrace,
  newId,
  newTrace,
  NackError,
  NackReasonSchema,
  TaskCancelBodySchema,
  TaskDelegateBodySchema,
  TaskResultBodySchema,
  TaskStatusBodySchema,
  TERMINAL_TASK_STATES
} from '@persona-mesh/protocol'
import { AbortError, InvalidArgumentError, LoopDetectedError, NotFoundError, TaskFailedError, TimeoutError } from '../errors.js'
import type { DelegateOptions, DelegateTarget, TaskContext, TaskHandler, TaskHandlerOptions, TaskInfo, TaskUpdate } from './index.js'
import type { EnvelopeOptions, SendResult } from '../delivery/index.js'
import type { Policy } from '../policy/policy.js'
import type { JsonValue, NackReason, TaskState, TaskTree } from '@persona-mesh/protocol'
import type { InboxEntry, MeshStore, TaskRecord } from '@persona-mesh/store'

const log = logger('persona-mesh:tasks')

/** Delegation chains deeper than this are refused `loop_detected`. @default 8 */
export const DEFAULT_MAX_HOPS = 8
/** Deadline of a task when none is given. */
export const DEFAULT_TASK_TIMEOUT_MS = 60 * 60 * 1000
/** Progress reports sent at most this often (the last one always goes). */
const PROGRESS_INTERVAL_MS = 200
/** Retries of a delegation refused `overloaded` by the only candidate. */
const MAX_OVERLOAD_RETRIES = 5
const HISTORY_LIMIT = 50
const SWEEP_MS = 1000

export interface TaskComponents {
  self: string
  store: () => MeshStore
  send: (to: string, body: JsonValue, options: EnvelopeOptions & { id?: string }) => Promise<SendResult>
  /** Peers offering `capability`, best first (online, lightly loaded). */
  candidates: (capability: string) => Promise<string[]>
  /** PeerId of a persona name or PeerId. */
  resolve: (peer: string) => Promise<string>
  /** Capabilities in a peer's verified card (or ours for `self`). */
  capabilitiesOf: (peer: string) => string[]
  policy: () => Policy
  audit: (event: { kind: string, peer: string, id: string, trace?: string, outcome: string, detail?: JsonValue }) => void
}

export interface TaskServiceInit {
  /** @default 8 */
  maxHops?: number
  /** @default 1 hour */
  defaultTimeout?: number
}

export interface TaskEvents {
  'task:update': CustomEvent<TaskInfo>
}

interface Handler {
  handler: TaskHandler
  maxConcurrent: number
  running: number
}

interface Parent {
  id: string
  trace: string
  hop: number
  path: string[]
}

const STOPPING = new Error('node stopping')
const CANCELED = new Error('canceled by the delegator')

function isTerminal (status: TaskState): boolean {
  return TERMINAL_TASK_STATES.has(status)
}

function record (info: TaskInfo & { parentId?: string, delegateId?: string, retryAt?: number }): TaskRecord {
  return JSON.parse(JSON.stringify(info)) as TaskRecord
}

/**
 * Tasks (DESIGN §8): delegation with status, progress, result and cancel, all as durable signed
 * envelopes. The worker is authoritative for how a delivered task ends; the delegator ends it
 * itself only when it never reached the worker (cancel before delivery) or the deadline passed.
 * Every task reaches exactly one terminal state on each side; later reports are ignored.
 */
export class TaskService extends TypedEventEmitter<TaskEvents> {
  private readonly handlers = new Map<string, Handler>()
  private readonly running = new Map<string, AbortController>()
  private readonly locks = new Map<string, Promise<unknown>>()
  /** Non-terminal tasks, for the deadline and retry sweep. */
  private readonly active = new Set<string>()
  private readonly peerOf = new Map<string, string>()
  private readonly maxHops: number
  private readonly defaultTimeout: number
  private sweepTimer?: ReturnType<typeof setInterval>
  private started = false

  constructor (private readonly components: TaskComponents, init: TaskServiceInit = {}) {
    super()
    this.maxHops = init.maxHops ?? DEFAULT_MAX_HOPS
    this.defaultTimeout = init.defaultTimeout ?? DEFAULT_TASK_TIMEOUT_MS
  }

  // ---- lifecycle ------------------------------------------------------------------------------

  async start (): Promise<void> {
    if (this.started) return
    this.started = true
    await this.recover()
    this.sweepTimer = setInterval(() => { void this.sweep() }, SWEEP_MS)
  }

  async stop (): Promise<void> {
    if (!this.started) return
    this.started = false
    clearInterval(this.sweepTimer)
    // running handlers stop without a verdict: the task stays `working` and resumes on restart
    for (const controller of this.running.values()) controller.abort(STOPPING)
    await Promise.allSettled([...this.locks.values()])
    this.active.clear()
  }

  /** After a restart: pick up what a crash interrupted. */
  private async recover (): Promise<void> {
    const store = this.components.store()
    for (const status of ['submitted', 'accepted', 'working'] as const) {
      let cursor: string | undefined
      for (let pages = 0; pages < 100; pages++) {
        const page = await store.tasks.list({ status, limit: 500, ...(cursor !== undefined ? { cursor } : {}) })
        for (const rec of page.entries) {
          const info = rec as unknown as TaskInfo
          this.active.add(info.id)
          this.peerOf.set(info.id, info.peer)
          if (info.direction === 'incoming' && info.mode === 'handler') void this.resume(info)
        }
        if (!page.more || page.nextCursor === undefined) break
        cursor = page.nextCursor
      }
    }
    // task messages stored but not yet processed when the node went down
    let cursor: string | undefined
    for (let pages = 0; pages < 100; pages++) {
      const page = await store.inbox.read({ kind: ['task.delegate', 'task.status', 'task.result', 'task.cancel'], unreadOnly: true, limit: 500, ...(cursor !== undefined ? { cursor } : {}) })
      for (const entry of page.entries) await this.onEnvelope(entry)
      if (!page.more || page.nextCursor === undefined) break
      cursor = page.nextCursor
    }
  }

  private async resume (info: TaskInfo): Promise<void> {
    const handler = this.handlers.get(info.capability)
    if (handler === undefined || info.deadline <= Date.now()) {
      await this.locked(info.id, async () => {
        await this.finish(info.id, { status: 'failed', error: { reason: 'internal_error', message: 'the worker restarted and could not resume the task' } })
      })
      return
    }
    this.run(info, handler)
  }

  // ---- worker side ----------------------------------------------------------------------------

  handle (capability: string, handler: TaskHandler, options: TaskHandlerOptions = {}): void {
    const maxConcurrent = options.maxConcurrent ?? 4
    if (!(maxConcurrent >= 1)) throw new InvalidArgumentError('maxConcurrent must be at least 1')
    this.handlers.set(capability, { handler, maxConcurrent, running: 0 })
  }

  unhandle (capability: string): void {
    this.handlers.delete(capability)
  }

  handledCapabilities (): string[] {
    return [...this.handlers.keys()]
  }

  /** A task envelope landed in the inbox. */
  async onEnvelope (entry: InboxEntry): Promise<void> {
    if (entry.quarantined) return
    try {
      switch (entry.kind) {
        case 'task.delegate': await this.onDelegate(entry); break
        case 'task.status': await this.onStatus(entry); break
        case 'task.result': await this.onResult(entry); break
        case 'task.cancel': await this.onCancel(entry); break
        default: return
      }
    } catch (err) {
      log.error('could not process %s %s: %e', entry.kind, entry.id, err)
    }
  }

  private async ack (entry: InboxEntry): Promise<void> {
    await this.components.store().inbox.ack([entry.id]).catch(() => {})
  }

  private async onDelegate (entry: InboxEntry): Promise<void> {
    const parsed = TaskDelegateBodySchema.safeParse(entry.body)
    if (!parsed.success) {
      this.components.audit({ kind: 'task.delegate', peer: entry.from, id: entry.id, trace: entry.trace, outcome: 'refused: invalid_request', detail: parsed.error.issues[0]?.message ?? '' })
      await this.ack(entry)
      return
    }
    const body = parsed.data
    await this.locked(body.taskId, async () => {
      const store = this.components.store()
      const existing = await store.tasks.get(body.taskId) as unknown as TaskInfo | undefined
      const retry = existing !== undefined && existing.peer === entry.from && existing.status === 'rejected' && existing.error?.reason === 'overloaded'
      if (existing !== undefined && !retry) {
        // an agent's pending task keeps its delegation unread (recovery replays it here)
        if (!(existing.mode === 'agent' && !isTerminal(existing.status))) await this.ack(entry)
        return
      }
      const now = Date.now()
      const info: TaskInfo = {
        id: body.taskId,
        direction: 'incoming',
        peer: entry.from,
        capability: body.capability,
        status: 'submitted',
        input: body.input,
        deadline: body.deadline,
        createdAt: now,
        updatedAt: now,
        trace: entry.trace,
        hop: entry.hop,
        path: body.path,
        attempts: 1,
        children: [],
        history: [{ at: now, status: 'submitted' }]
      }
      const reject = async (reason: NackReason, message: string): Promise<void> => {
        info.status = 'rejected'
        info.error = { reason, message }
        info.history.push({ at: Date.now(), status: 'rejected', message })
        await this.save(info)
        await this.components.send(entry.from, { taskId: info.id, status: 'rejected', reason, message }, this.replyOptions(info))
        this.components.audit({ kind: 'task.delegate', peer: entry.from, id: info.id, trace: info.trace, outcome: `refused: ${reason}`, detail: message })
        await this.ack(entry)
      }
      if (body.deadline <= now) return reject('expired', 'the deadline passed before the task arrived')
      if (body.path.includes(this.components.self) || entry.hop > this.maxHops) {
        return reject('loop_detected', entry.hop > this.maxHops ? `more than ${this.maxHops} hops` : 'this peer is already on the delegation chain')
      }
      const verdict = this.components.policy().task(entry.from, body.capability)
      if (!verdict.ok) return reject(verdict.reason, verdict.message)
      const handler = this.handlers.get(body.capability)
      if (handler !== undefined) {
        if (handler.running >= handler.maxConcurrent) return reject('overloaded', `already running ${handler.maxConcurrent} ${body.capability} tasks`)
        info.mode = 'handler'
        this.transition(info, 'accepted')
        await this.save(info)
        await this.components.send(entry.from, { taskId: info.id, status: 'accepted' }, this.replyOptions(info))
        this.components.audit({ kind: 'task.delegate', peer: entry.from, id: info.id, trace: info.trace, outcome: 'accepted' })
        await this.ack(entry)
        this.run(info, handler)
        return
      }
      if (this.components.capabilitiesOf(this.components.self).includes(body.capability)) {
        // advertised but no code: an agent works it through tasks.update; it stays in the inbox
        info.mode = 'agent'
        await this.save(info)
        this.components.audit({ kind: 'task.delegate', peer: entry.from, id: info.id, trace: info.trace, outcome: 'pending for the agent' })
        return
      }
      return reject('incapable', `no ${body.capability} capability here`)
    })
  }

  private run (info: TaskInfo, handler: Handler): void {
    handler.running++
    const controller = new AbortController()
    this.running.set(info.id, controller)
    const signal = AbortSignal.any([controller.signal, AbortSignal.timeout(Math.max(0, info.deadline - Date.now()))])
    let lastProgress = 0
    let pending: { percent: number, message?: string } | undefined
    let progressTimer: ReturnType<typeof setTimeout> | undefined
    const flushProgress = async (): Promise<void> => {
      progressTimer = undefined
      const report = pending
      pending = undefined
      if (report === undefined || signal.aborted) return
      lastProgress = Date.now()
      await this.locked(info.id, async () => {
        const current = await this.load(info.id)
        if (current === undefined || isTerminal(current.status)) return
        current.progress = report.percent
        if (report.message !== undefined) current.message = report.message
        this.transition(current, 'working', report)
        await this.save(current)
        await this.components.send(current.peer, { taskId: current.id, status: 'working', progress: report.percent, ...(report.message !== undefined ? { message: report.message } : {}) }, this.replyOptions(current))
      }).catch((err: Error) => { log('progress of %s not sent: %s', info.id, err.message) })
    }
    const context: TaskContext = {
      taskId: info.id,
      from: info.peer,
      capability: info.capability,
      signal,
      deadline: info.deadline,
      progress: (percent, message) => {
        pending = { percent: Math.max(0, Math.min(100, percent)), ...(message !== undefined ? { message: String(message).slice(0, 1000) } : {}) }
        if (progressTimer !== undefined) return
        progressTimer = setTimeout(() => { void flushProgress() }, Math.max(0, lastProgress + PROGRESS_INTERVAL_MS - Date.now()))
      },
      delegate: async (target, input, options) => this.delegate(target, input, options, { id: info.id, trace: info.trace, hop: info.hop, path: info.path }),
      result: async (taskId, options) => this.result(taskId, options)
    }
    void (async () => {
      try {
        await this.locked(info.id, async () => {
          const current = await this.load(info.id)
          if (current === undefined || isTerminal(current.status) || current.status === 'working') return
          this.transition(current, 'working')
          await this.save(current)
          await this.components.send(current.peer, { taskId: current.id, status: 'working' }, this.replyOptions(current))
        })
        const result = await Promise.race([
          Promise.resolve().then(async () => await handler.handler(info.input, context)),
          new Promise<never>((_resolve, reject) => { signal.addEventListener('abort', () => { reject(signal.reason) }, { once: true }) })
        ])
        clearTimeout(progressTimer)
        await flushProgress()
        await this.locked(info.id, async () => { await this.finish(info.id, { status: 'completed', result: result ?? null }) })
      } catch (err) {
        clearTimeout(progressTimer)
        if (controller.signal.reason === STOPPING) return
        const outcome: Pick<TaskInfo, 'status' | 'error'> = controller.signal.reason === CANCELED
          ? { status: 'canceled', error: { message: 'canceled by the delegator' } }
          : signal.aborted
            ? { status: 'failed', error: { reason: 'timeout', message: 'the deadline passed before the task finished' } }
            : err instanceof NackError
              ? { status: 'failed', error: { reason: err.reason, message: err.detail ?? err.message } }
              : err instanceof LoopDetectedError
                ? { status: 'failed', error: { reason: 'loop_detected', message: err.message.slice(0, 1000) } }
              : { status: 'failed', error: { message: String((err as Error)?.message ?? err).slice(0, 1000) } }
        await this.locked(info.id, async () => { await this.finish(info.id, outcome) })
      } finally {
        handler.running--
        this.running.delete(info.id)
      }
    })().catch((err: Error) => { log.error('task %s: %e', info.id, err) })
  }

  /** End a task this side is authoritative for and tell the delegator. Call under the task's lock. */
  private async finish (id: string, outcome: { status: TaskState, result?: JsonValue, error?: TaskInfo['error'] }): Promise<void> {
    const info = await this.load(id)
    if (info === undefined || isTerminal(info.status)) return
    if (outcome.result !== undefined) info.result = outcome.result
    if (outcome.error !== undefined) info.error = outcome.error
    if (outcome.status === 'completed') info.progress = 100
    info.children = await this.childrenOf(info.id)
    this.transition(info, outcome.status, outcome.error !== undefined ? { message: outcome.error.message } : undefined)
    await this.save(info)
    if (info.direction === 'incoming') {
      const body: Record<string, JsonValue> = { taskId: info.id, status: outcome.status as 'completed' }
      if (outcome.result !== undefined) body.result = outcome.result
      if (outcome.error !== undefined) body.error = outcome.error
      if (info.children.length > 0) body.children = info.children as unknown as JsonValue
      await this.components.send(info.peer, body, this.replyOptions(info, 'task.result'))
    }
    this.components.audit({ kind: 'task', peer: info.peer, id: info.id, trace: info.trace, outcome: info.status, ...(info.error !== undefined ? { detail: info.error.message } : {}) })
  }

  private async onCancel (entry: InboxEntry): Promise<void> {
    const parsed = TaskCancelBodySchema.safeParse(entry.body)
    if (parsed.success) {
      const { taskId } = parsed.data
      await this.locked(taskId, async () => {
        const info = await this.load(taskId)
        if (info === undefined || info.direction !== 'incoming' || info.peer !== entry.from || isTerminal(info.status)) return
        const controller = this.running.get(taskId)
        if (controller !== undefined) {
          controller.abort(CANCELED)
        } else {
          await this.finish(taskId, { status: 'canceled', error: { message: 'canceled by the delegator' } })
        }
      })
    }
    await this.ack(entry)
  }

  /** The agent as worker: accept, report progress, complete, fail or reject a task it received. */
  async update (id: string, update: TaskUpdate): Promise<TaskInfo> {
    return this.locked(id, async () => {
      const info = await this.load(id)
      if (info === undefined || info.direction !== 'incoming') throw new NotFoundError(`no incoming task ${id}`)
      if (isTerminal(info.status)) throw new InvalidArgumentError(`task ${id} already ended: ${info.status}`)
      if (info.mode === 'handler') throw new InvalidArgumentError(`task ${id} is run by a code handler`)
      const options = this.replyOptions(info)
      switch (update.status) {
        case 'accepted':
        case 'working': {
          if (update.status === 'accepted' && info.status === 'working') throw new InvalidArgumentError(`task ${id} is already working`)
          if (update.progress !== undefined) info.progress = Math.max(0, Math.min(100, update.progress))
          if (update.message !== undefined) info.message = update.message
          this.transition(info, update.status, { ...(update.progress !== undefined ? { percent: update.progress } : {}), ...(update.message !== undefined ? { message: update.message } : {}) })
          await this.save(info)
          await this.components.send(info.peer, { taskId: id, status: update.status, ...(info.progress !== undefined ? { progress: info.progress } : {}), ...(update.message !== undefined ? { message: update.message } : {}) }, options)
          break
        }
        case 'rejected': {
          const message = update.message ?? 'declined by the agent'
          info.error = { reason: 'incapable', message }
          this.transition(info, 'rejected', { message })
          await this.save(info)
          await this.components.send(info.peer, { taskId: id, status: 'rejected', reason: 'incapable', message }, options)
          break
        }
        case 'completed':
          await this.finish(id, { status: 'completed', result: update.result ?? null })
          break
        case 'failed':
          await this.finish(id, { status: 'failed', error: { message: update.message ?? 'failed' } })
          break
        default:
          throw new InvalidArgumentError(`status must be accepted, working, completed, failed or rejected, not ${String(update.status)}`)
      }
      await this.ackDelegation(id)
      const updated = await this.load(id)
      return updated ?? info
    })
  }

  private async ackDelegation (taskId: string): Promise<void> {
    const page = await this.components.store().inbox.read({ kind: 'task.delegate', unreadOnly: true, limit: 1000 })
    const entry = page.entries.find(e => (e.body as { taskId?: string } | null)?.taskId === taskId)
    if (entry !== undefined) await this.ack(entry)
  }

  // ---- delegator side -------------------------------------------------------------------------

  async delegate (target: DelegateTarget, input: JsonValue, options: DelegateOptions = {}, parent?: Parent): Promise<TaskInfo> {
    const self = this.components.self
    let capability = typeof target === 'object' ? target.capability : options.capability
    const peerHint = typeof target === 'string' ? target : target.peer
    let candidates: string[]
    if (peerHint !== undefined) {
      const peer = await this.components.resolve(peerHint)
      if (capability === undefined) {
        const offered = this.components.capabilitiesOf(peer)
        if (offered.length !== 1) throw new InvalidArgumentError(`say which capability to ask ${peerHint} for (it offers ${offered.join(', ') || 'none we know of'})`)
        capability = offered[0]!
      }
      candidates = [peer]
    } else {
      if (capability === undefined) throw new InvalidArgumentError('delegate needs a peer or a capability')
      candidates = (await this.components.candidates(capability)).filter(p => p !== self)
      if (candidates.length === 0) throw new NotFoundError(`no peer offers ${capability}`)
    }
    if (candidates.includes(self)) throw new InvalidArgumentError('a persona cannot delegate to itself')
    const path = parent !== undefined ? [...parent.path, self] : [self]
    const hop = parent !== undefined ? parent.hop + 1 : 0
    if (hop > this.maxHops) throw new LoopDetectedError(`delegation chain deeper than ${this.maxHops} hops`)
    const reachable = candidates.filter(p => !path.includes(p))
    if (reachable.length === 0) throw new LoopDetectedError(`${candidates[0]} is already on this delegation chain`)
    const now = Date.now()
    const deadline = options.deadline ?? now + (options.timeout ?? this.defaultTimeout)
    if (!(deadline > now)) throw new InvalidArgumentError('the deadline is in the past')
    const info: TaskInfo & { parentId?: string, delegateId?: string } = {
      id: newId(),
      direction: 'outgoing',
      peer: reachable[0]!,
      capability,
      status: 'submitted',
      input,
      deadline,
      createdAt: now,
      updatedAt: now,
      trace: parent !== undefined ? childTrace(parent.trace) : newTrace(),
      hop,
      path,
      candidates: reachable.slice(1),
      attempts: 1,
      children: [],
      history: [{ at: now, status: 'submitted' }]
    }
    if (parent !== undefined) info.parentId = parent.id
    await this.save(info)
    await this.locked(info.id, async () => { await this.sendDelegation(info, options) })
    return (await this.load(info.id)) ?? info
  }

  private async sendDelegation (info: TaskInfo & { delegateId?: string }, options: Pick<DelegateOptions, 'priority'> = {}): Promise<void> {
    const sent = await this.components.send(info.peer, {
      taskId: info.id,
      capability: info.capability,
      input: info.input,
      deadline: info.deadline,
      path: info.path
    }, {
      kind: 'task.delegate',
      trace: info.trace,
      hop: info.hop,
      ttl: Math.max(1000, info.deadline - Date.now()),
      ...(options.priority !== undefined ? { priority: options.priority } : {})
    })
    info.delegateId = sent.id
    await this.save(info)
    this.components.audit({ kind: 'task.delegate', peer: info.peer, id: info.id, trace: info.trace, outcome: 'sent', detail: info.capability })
  }

  private async onStatus (entry: InboxEntry): Promise<void> {
    const parsed = TaskStatusBodySchema.safeParse(entry.body)
    if (parsed.success) {
      const body = parsed.data
      await this.locked(body.taskId, async () => {
        const info = await this.load(body.taskId)
        if (info === undefined || info.direction !== 'outgoing' || info.peer !== entry.from || isTerminal(info.status)) return
        if (body.children !== undefined) info.children = body.children
        if (body.status === 'rejected') {
          await this.onRejected(info, body.reason ?? 'incapable', body.message ?? 'rejected')
          return
        }
        if (body.progress !== undefined) info.progress = body.progress
        if (body.message !== undefined) info.message = body.message
        this.transition(info, body.status, { ...(body.progress !== undefined ? { percent: body.progress } : {}), ...(body.message !== undefined ? { message: body.message } : {}) })
        await this.saveAndAck(info, entry)
      })
    }
    await this.ack(entry)
  }

  /** Record what a task message said, mark the message handled, then tell listeners: a waiter
   * woken by the update never sees the message as unread. */
  private async saveAndAck (info: TaskInfo, entry: InboxEntry): Promise<void> {
    await this.save(info, false)
    await this.ack(entry)
    this.emitUpdate(info)
  }

  /** A refusal: fall over to the next candidate, back off and retry when overloaded, or end `rejected`. */
  private async onRejected (info: TaskInfo & { retryAt?: number }, reason: NackReason, message: string): Promise<void> {
    const next = (reason === 'overloaded' || reason === 'incapable') ? info.candidates?.shift() : undefined
    if (next !== undefined) {
      info.history.push({ at: Date.now(), status: 'submitted', message: `${info.peer} refused (${reason}); trying ${next}` })
      info.peer = next
      info.attempts++
      info.status = 'submitted'
      info.updatedAt = Date.now()
      await this.sendDelegation(info)
      this.emitUpdate(info)
      return
    }
    if (reason === 'overloaded' && info.attempts <= MAX_OVERLOAD_RETRIES) {
      // backpressure: ask the same peer again later, further apart each time
      info.retryAt = Date.now() + 1000 * 2 ** info.attempts
      info.attempts++
      info.history.push({ at: Date.now(), status: 'submitted', message: `${reason}: retrying at ${new Date(info.retryAt).toISOString()}` })
      info.status = 'submitted'
      await this.save(info)
      return
    }
    info.error = { reason, message }
    this.transition(info, 'rejected', { message })
    await this.save(info)
  }

  private async onResult (entry: InboxEntry): Promise<void> {
    const parsed = TaskResultBodySchema.safeParse(entry.body)
    if (parsed.success) {
      const body = parsed.data
      await this.locked(body.taskId, async () => {
        const info = await this.load(body.taskId)
        if (info === undefined || info.direction !== 'outgoing' || info.peer !== entry.from || isTerminal(info.status)) return
        if (body.result !== undefined) info.result = body.result
        if (body.error !== undefined) info.error = body.error.reason !== undefined ? { reason: body.error.reason, message: body.error.message } : { message: body.error.message }
        if (body.children !== undefined) info.children = body.children
        if (body.status === 'completed') info.progress = 100
        this.transition(info, body.status, body.error !== undefined ? { message: body.error.message } : undefined)
        await this.saveAndAck(info, entry)
        this.components.audit({ kind: 'task.result', peer: entry.from, id: info.id, trace: info.trace, outcome: body.status })
      })
    }
    await this.ack(entry)
  }

  /** A delegation envelope was refused at delivery (deny list, no quarantine): treat it as the worker's refusal. */
  async onDeliveryFailed (failure: { id: string, to: string, reason?: string }): Promise<void> {
    for (const id of [...this.active]) {
      const info = await this.load(id) as (TaskInfo & { delegateId?: string }) | undefined
      if (info?.direction !== 'outgoing' || info.delegateId !== failure.id) continue
      await this.locked(id, async () => {
        const current = await this.load(id) as (TaskInfo & { delegateId?: string }) | undefined
        if (current === undefined || isTerminal(current.status) || current.delegateId !== failure.id) return
        const word = (failure.reason ?? '').split(':')[0]!.trim()
        const reason = (NackReasonSchema.safeParse(word).success ? word : 'internal_error') as NackReason
        await this.onRejected(current, reason, failure.reason ?? 'the delegation could not be delivered')
      })
      return
    }
  }

  /** Cancel a task we delegated. Before it reached the worker it ends `canceled` here; after, the worker decides. */
  async cancel (id: string): Promise<TaskInfo> {
    return this.locked(id, async () => {
      const info = await this.load(id) as (TaskInfo & { delegateId?: string }) | undefined
      if (info === undefined || info.direction !== 'outgoing') throw new NotFoundError(`no outgoing task ${id}`)
      if (isTerminal(info.status)) return info
      const store = this.components.store()
      if (info.status === 'submitted' && info.delegateId !== undefined) {
        const [settled] = await store.outbox.settle([info.delegateId], { status: 'failed', reason: 'canceled by the delegator before delivery' })
        if (settled?.changed === true) {
          info.error = { message: 'canceled before it reached the worker' }
          this.transition(info, 'canceled', { message: 'canceled before delivery' })
          await this.save(info)
          return info
        }
      }
      await this.components.send(info.peer, { taskId: id, reason: 'canceled by the delegator' }, this.replyOptions(info, 'task.cancel'))
      info.message = 'cancel requested'
      info.history.push({ at: Date.now(), status: info.status, message: 'cancel requested' })
      await this.save(info)
      return info
    })
  }

  // ---- queries ---------------------------------------------------------------------------------

  async get (id: string): Promise<TaskInfo | undefined> {
    return this.load(id)
  }

  async list (query: { direction?: 'incoming' | 'outgoing', status?: TaskState, limit?: number } = {}): Promise<TaskInfo[]> {
    const page = await this.components.store().tasks.list({ reverse: true, limit: query.limit ?? 100, ...(query.direction !== undefined ? { direction: query.direction } : {}), ...(query.status !== undefined ? { status: query.status } : {}) })
    return page.entries as unknown as TaskInfo[]
  }

  /** Resolve when the task reaches a terminal state. Throws `TimeoutError` / `AbortError`. */
  async wait (id: string, options: { timeout?: number, signal?: AbortSignal } = {}): Promise<TaskInfo> {
    const done = Promise.withResolvers<TaskInfo>()
    const listener = (evt: CustomEvent<TaskInfo>): void => {
      if (evt.detail.id === id && isTerminal(evt.detail.status)) done.resolve(evt.detail)
    }
    this.addEventListener('task:update', listener)
    const timer = options.timeout !== undefined ? setTimeout(() => { done.reject(new TimeoutError(`task ${id} did not finish within ${options.timeout} ms`)) }, options.timeout) : undefined
    const onAbort = (): void => { done.reject(new AbortError('wait aborted')) }
    options.signal?.addEventListener('abort', onAbort, { once: true })
    try {
      const current = await this.load(id)
      if (current === undefined) throw new NotFoundError(`no task ${id}`)
      if (isTerminal(current.status)) return current
      return await done.promise
    } finally {
      this.removeEventListener('task:update', listener)
      clearTimeout(timer)
      options.signal?.removeEventListener('abort', onAbort)
    }
  }

  /** The result of a completed task; `TaskFailedError` for any other ending. */
  async result (id: string, options: { timeout?: number, signal?: AbortSignal } = {}): Promise<JsonValue> {
    const info = await this.wait(id, options)
    if (info.status === 'completed') return info.result ?? null
    throw new TaskFailedError(id, info.status, info.error?.reason, info.error?.message)
  }

  /** Our unfinished tasks with `peer`: how loaded a candidate is, from where we stand. */
  activeWith (peer: string): number {
    let n = 0
    for (const id of this.active) if (this.peerOf.get(id) === peer) n++
    return n
  }

  // ---- internals -------------------------------------------------------------------------------

  private async sweep (): Promise<void> {
    const now = Date.now()
    for (const id of [...this.active]) {
      await this.locked(id, async () => {
        const info = await this.load(id) as (TaskInfo & { retryAt?: number, delegateId?: string }) | undefined
        if (info === undefined || isTerminal(info.status)) { this.active.delete(id); return }
        if (info.deadline <= now) {
          if (info.direction === 'outgoing') {
            if (info.delegateId !== undefined) await this.components.store().outbox.settle([info.delegateId], { status: 'expired', reason: 'the task deadline passed' }).catch(() => {})
            info.error = { reason: 'timeout', message: 'the deadline passed without a result' }
            this.transition(info, 'expired', { message: 'deadline passed' })
            await this.save(info)
          } else if (!this.running.has(id)) {
            await this.finish(id, { status: 'failed', error: { reason: 'timeout', message: 'the deadline passed before the task finished' } })
          }
          return
        }
        if (info.direction === 'outgoing' && info.retryAt !== undefined && info.retryAt <= now && info.status === 'submitted') {
          delete info.retryAt
          await this.sendDelegation(info)
        }
      }).catch((err: Error) => { log.error('task sweep %s: %e', id, err) })
    }
  }

  private transition (info: TaskInfo, status: TaskState, detail?: { percent?: number, message?: string }): void {
    info.status = status
    info.updatedAt = Date.now()
    const last = info.history.at(-1)
    const step: TaskInfo['history'][number] = { at: info.updatedAt, status }
    if (detail?.percent !== undefined) step.progress = detail.percent
    if (detail?.message !== undefined) step.message = detail.message
    // progress reports of one status collapse into one history line
    if (last !== undefined && last.status === status && status === 'working' && detail?.percent !== undefined) {
      info.history[info.history.length - 1] = step
    } else {
      info.history.push(step)
    }
    if (info.history.length > HISTORY_LIMIT) info.history.splice(1, info.history.length - HISTORY_LIMIT)
  }

  /** Persist (synced) and, unless told otherwise, tell listeners. */
  private async save (info: TaskInfo, emit = true): Promise<void> {
    await this.components.store().tasks.put(record(info))
    if (isTerminal(info.status)) {
      this.active.delete(info.id)
      this.peerOf.delete(info.id)
    } else {
      this.active.add(info.id)
      this.peerOf.set(info.id, info.peer)
    }
    if (emit) this.emitUpdate(info)
  }

  private emitUpdate (info: TaskInfo): void {
    try {
      this.dispatchEvent(new CustomEvent('task:update', { detail: structuredClone(info) }))
    } catch (err) {
      log.error('task listener threw: %e', err)
    }
  }

  private async load (id: string): Promise<TaskInfo | undefined> {
    return await this.components.store().tasks.get(id) as unknown as TaskInfo | undefined
  }

  private async childrenOf (id: string): Promise<TaskTree[]> {
    const page = await this.components.store().tasks.list({ direction: 'outgoing', reverse: true, limit: 500 })
    return page.entries
      .filter(r => (r as { parentId?: string }).parentId === id)
      .slice(0, 32)
      .map(r => {
        const child = r as unknown as TaskInfo
        return { taskId: child.id, peer: child.peer, capability: child.capability, status: child.status, children: child.children ?? [] }
      })
  }

  /** Envelope options for a message about `info` to the other side (answers outlive the deadline by an hour). */
  private replyOptions (info: TaskInfo, kind: 'task.status' | 'task.result' | 'task.cancel' = 'task.status'): EnvelopeOptions {
    return { kind, trace: info.trace, hop: info.hop, ttl: Math.max(60_000, info.deadline - Date.now() + 60 * 60 * 1000) }
  }

  /** Run `fn` with the task's lock: updates of one task never interleave. */
  private async locked<T> (id: string, fn: () => Promise<T>): Promise<T> {
    const previous = this.locks.get(id) ?? Promise.resolve()
    const next = previous.catch(() => {}).then(fn)
    this.locks.set(id, next)
    try {
      return await next
    } finally {
      if (this.locks.get(id) === next) this.locks.delete(id)
    }
  }
}
