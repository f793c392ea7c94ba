import type { JsonValue, NackReason, Priority, TaskState, TaskTree } from '@persona-mesh/protocol'

export { TaskService, type TaskServiceInit, type TaskComponents } from './task-service.js'

/** What both sides know about a task. */
export interface TaskInfo {
  id: string
  direction: 'incoming' | 'outgoing'
  /** The worker (outgoing) or the delegator (incoming). */
  peer: string
  capability: string
  status: TaskState
  input: JsonValue
  result?: JsonValue
  error?: { reason?: NackReason, message: string }
  progress?: number
  message?: string
  /** ms since epoch */
  deadline: number
  createdAt: number
  updatedAt: number
  trace: string
  hop: number
  path: string[]
  /** Incoming: run by a code handler, or waiting for an agent (`tasks.update`). */
  mode?: 'handler' | 'agent'
  /** Outgoing: peers still to try if this one refuses (overloaded/incapable). */
  candidates?: string[]
  attempts: number
  /** Tasks delegated while working on this one, as far as reported. */
  children: TaskTree[]
  history: Array<{ at: number, status: TaskState, progress?: number, message?: string }>
}

export interface DelegateOptions {
  /** Which capability to ask for (needed when the target is a peer with several). */
  capability?: string
  /** Give up after this many ms. @default 3600000 (1 h) */
  timeout?: number
  /** Absolute deadline (ms since epoch); wins over `timeout`. */
  deadline?: number
  priority?: Priority
  signal?: AbortSignal
}

/** Where to send a task: a peer (name or PeerId), or any peer with a capability. */
export type DelegateTarget = string | { capability: string, peer?: string }

export interface TaskContext {
  taskId: string
  /** The delegator's PeerId. */
  from: string
  capability: string
  /** Aborted on cancel, deadline, or node stop. */
  signal: AbortSignal
  deadline: number
  /** Report progress (0-100) with an optional message; sent to the delegator (throttled). */
  progress: (percent: number, message?: string) => void
  /** Delegate a sub-task in the same trace (hop + 1; loops are refused). */
  delegate: (target: DelegateTarget, input: JsonValue, options?: DelegateOptions) => Promise<TaskInfo>
  /** Wait for a task delegated from here to end; resolves with its result, throws TaskFailedError otherwise. */
  result: (taskId: string, options?: { signal?: AbortSignal }) => Promise<JsonValue>
}

/** A task handler: returns the result or throws (NackError to fail with a reason). */
export type TaskHandler = (input: any, context: TaskContext) => JsonValue | Promise<JsonValue>

export interface TaskHandlerOptions {
  /** Tasks of this capability running at once; more are refused `overloaded`. @default 4 */
  maxConcurrent?: number
}

export interface TaskUpdate {
  status: 'accepted' | 'working' | 'completed' | 'failed' | 'rejected'
  progress?: number
  message?: string
  result?: JsonValue
}
