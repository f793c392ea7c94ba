import { z } from 'zod'
import { CapabilityNameSchema } from './card.js'
import { MAX_TRACE_PATH } from './constants.js'
import { PeerIdStringSchema, UlidSchema } from './ids.js'
import { MAX_NACK_MESSAGE, NackReasonSchema } from './nack.js'

/**
 * Bodies of the task envelopes (`task.delegate`, `task.status`, `task.result`, `task.cancel`).
 * They travel as durable signed envelopes, so a task for an offline worker waits in the
 * delegator's outbox and a result for an offline delegator waits in the worker's.
 */
export const TASK_STATES = ['submitted', 'accepted', 'working', 'completed', 'failed', 'canceled', 'rejected', 'expired'] as const
export const TaskStateSchema = z.enum(TASK_STATES)
export type TaskState = z.infer<typeof TaskStateSchema>

/** States a task never leaves. */
export const TERMINAL_TASK_STATES: ReadonlySet<TaskState> = new Set(['completed', 'failed', 'canceled', 'rejected', 'expired'])

const Message = z.string().max(MAX_NACK_MESSAGE)

/** A summary of a task and the tasks it delegated in turn: how `pmesh trace` draws the chain. */
export interface TaskTree {
  taskId: string
  peer: string
  capability: string
  status: TaskState
  children: TaskTree[]
}

export const TaskTreeSchema: z.ZodType<TaskTree> = z.lazy(() => z.object({
  taskId: UlidSchema,
  peer: PeerIdStringSchema,
  capability: CapabilityNameSchema,
  status: TaskStateSchema,
  children: z.array(TaskTreeSchema).max(32)
}))

export const TaskDelegateBodySchema = z.strictObject({
  taskId: UlidSchema,
  capability: CapabilityNameSchema,
  input: z.json(),
  /** ms since epoch; the worker stops (and the delegator gives up) after it */
  deadline: z.number().int().positive(),
  /** PeerIds of the delegators so far, oldest first: a target already on it is a loop */
  path: z.array(PeerIdStringSchema).max(MAX_TRACE_PATH)
})

export const TaskStatusBodySchema = z.strictObject({
  taskId: UlidSchema,
  status: z.enum(['accepted', 'working', 'rejected']),
  progress: z.number().min(0).max(100).optional(),
  message: Message.optional(),
  /** why it was rejected */
  reason: NackReasonSchema.optional(),
  children: z.array(TaskTreeSchema).max(32).optional()
})

export const TaskResultBodySchema = z.strictObject({
  taskId: UlidSchema,
  status: z.enum(['completed', 'failed', 'canceled']),
  result: z.json().optional(),
  error: z.strictObject({ reason: NackReasonSchema.optional(), message: Message }).optional(),
  children: z.array(TaskTreeSchema).max(32).optional()
})

export const TaskCancelBodySchema = z.strictObject({
  taskId: UlidSchema,
  reason: Message.optional()
})

export type TaskDelegateBody = z.infer<typeof TaskDelegateBodySchema>
export type TaskStatusBody = z.infer<typeof TaskStatusBodySchema>
export type TaskResultBody = z.infer<typeof TaskResultBodySchema>
export type TaskCancelBody = z.infer<typeof TaskCancelBodySchema>

/** Rpc method for remote tool calls; reserved under `mesh.`. */
export const TOOL_CALL_METHOD = 'mesh.tool.call'

export const ToolCallRequestSchema = z.strictObject({
  tool: CapabilityNameSchema,
  args: z.json()
})
export type ToolCallRequest = z.infer<typeof ToolCallRequestSchema>
