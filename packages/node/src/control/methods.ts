import { z } from 'zod'
import { MESSAGE_KINDS, PRIORITIES, TASK_STATES } from '@persona-mesh/protocol'
import type { Mesh } from '../mesh.js'

export interface ControlMethodEntry<P = any> {
  params: z.ZodType<P, any>
  run(mesh: Mesh, params: P, signal: AbortSignal): Promise<unknown>
}

function method<S extends z.ZodType> (params: S, run: (mesh: Mesh, params: z.infer<S>, signal: AbortSignal) => Promise<unknown>): ControlMethodEntry<z.infer<S>> {
  return { params: params as z.ZodType<z.infer<S>, any>, run }
}

const NoParams = z.object({}).optional()
const Kind = z.enum(MESSAGE_KINDS)
const Filter = {
  from: z.string().min(1).optional(),
  thread: z.string().min(1).optional(),
  kind: z.union([Kind, z.array(Kind)]).optional(),
  topic: z.string().min(1).optional()
}

/** Drop keys whose value is undefined (exactOptionalPropertyTypes-friendly pass-through). */
function defined<T extends object> (value: T | undefined): T {
  return Object.fromEntries(Object.entries(value ?? {}).filter(([, v]) => v !== undefined)) as T
}

/**
 * Every `Mesh` operation the control socket serves, with its parameter schema. The daemon
 * dispatches through this table and `connectMesh()` calls the same names, so the two cannot
 * drift apart.
 */
export const controlMethods: Record<string, ControlMethodEntry> = {
  status: method(NoParams, async (mesh) => mesh.status()),
  dial: method(z.object({ multiaddr: z.string().min(1) }), async (mesh, p, signal) => {
    await mesh.dial(p.multiaddr, { signal })
    return null
  }),
  request: method(
    z.object({ peer: z.string().min(1), method: z.string().min(1), body: z.json(), timeout: z.number().int().positive().optional() }),
    async (mesh, p, signal) => mesh.request(p.peer, p.method, p.body, { signal, ...(p.timeout !== undefined ? { timeout: p.timeout } : {}) })
  ),
  peers: method(z.object({ onlineOnly: z.boolean().optional() }).optional(), async (mesh, p) => mesh.peers({ onlineOnly: p?.onlineOnly ?? false })),
  card: method(z.object({ peer: z.string().min(1).optional() }).optional(), async (mesh, p, signal) => mesh.card(p?.peer, { signal })),
  cards: method(NoParams, async (mesh) => mesh.cards()),
  find: method(
    z.object({ query: z.string().min(1).max(256), limit: z.number().int().min(1).max(100).optional(), dht: z.boolean().optional() }),
    async (mesh, p, signal) => mesh.find(p.query, { signal, ...(p.limit !== undefined ? { limit: p.limit } : {}), ...(p.dht !== undefined ? { dht: p.dht } : {}) })
  ),
  resolve: method(z.object({ nameOrId: z.string().min(1) }), async (mesh, p) => mesh.resolve(p.nameOrId)),
  updateCard: method(
    z.object({
      description: z.string().max(2048).optional(),
      capabilities: z.array(z.union([z.string(), z.object({ name: z.string(), description: z.string().optional(), tags: z.array(z.string()).optional() })])).max(64).optional(),
      topics: z.array(z.string()).max(64).optional()
    }),
    async (mesh, p) => mesh.updateCard(defined(p))
  ),
  send: method(
    z.object({
      to: z.string().min(1),
      body: z.json(),
      thread: z.string().min(1).max(128).optional(),
      replyTo: z.string().length(26).optional(),
      priority: z.enum(PRIORITIES).optional(),
      ttl: z.number().int().positive().optional()
    }),
    async (mesh, { to, body, ...options }, signal) => mesh.send(to, body, { ...defined(options), signal })
  ),
  'outbox.get': method(z.object({ id: z.string().min(1) }), async (mesh, p) => await mesh.outbox.get(p.id) ?? null),
  'outbox.list': method(
    z.object({ status: z.enum(['queued', 'delivered', 'expired', 'failed']).optional(), to: z.string().optional(), limit: z.number().int().min(1).max(1000).optional(), cursor: z.string().optional(), reverse: z.boolean().optional() }).optional(),
    async (mesh, p) => mesh.outbox.list(defined(p))
  ),
  'inbox.read': method(
    z.object({ ...Filter, cursor: z.string().optional(), unreadOnly: z.boolean().optional(), quarantined: z.boolean().optional(), limit: z.number().int().min(1).max(1000).optional() }).optional(),
    async (mesh, p) => mesh.inbox.read(defined(p))
  ),
  'inbox.get': method(z.object({ id: z.string().min(1) }), async (mesh, p) => await mesh.inbox.get(p.id) ?? null),
  'inbox.ack': method(z.object({ ids: z.array(z.string().min(1)).min(1).max(1000) }), async (mesh, p) => mesh.inbox.ack(p.ids)),
  'inbox.unread': method(NoParams, async (mesh) => mesh.inbox.unread()),
  'inbox.wait': method(
    z.object({ ...Filter, cursor: z.string().optional(), timeout: z.number().int().min(0).optional(), limit: z.number().int().min(1).max(100).optional() }).optional(),
    async (mesh, p, signal) => mesh.inbox.wait({ ...defined(p), signal })
  ),
  delegate: method(
    z.object({
      peer: z.string().min(1).optional(),
      capability: z.string().min(1).optional(),
      input: z.json(),
      timeout: z.number().int().positive().optional(),
      deadline: z.number().int().positive().optional(),
      priority: z.enum(PRIORITIES).optional()
    }).refine(p => p.peer !== undefined || p.capability !== undefined, 'give a peer or a capability'),
    async (mesh, { peer, capability, input, ...options }, signal) => {
      const target = peer !== undefined ? (capability !== undefined ? { peer, capability } : peer) : { capability: capability! }
      return mesh.delegate(target, input, { ...defined(options), signal })
    }
  ),
  'tasks.list': method(
    z.object({ direction: z.enum(['incoming', 'outgoing']).optional(), status: z.enum(TASK_STATES).optional(), limit: z.number().int().min(1).max(1000).optional() }).optional(),
    async (mesh, p) => mesh.tasks.list(defined(p))
  ),
  'tasks.get': method(z.object({ id: z.string().min(1) }), async (mesh, p) => await mesh.tasks.get(p.id) ?? null),
  'tasks.wait': method(z.object({ id: z.string().min(1), timeout: z.number().int().positive().optional() }), async (mesh, p, signal) => mesh.tasks.wait(p.id, { ...defined({ timeout: p.timeout }), signal })),
  'tasks.cancel': method(z.object({ id: z.string().min(1) }), async (mesh, p) => mesh.tasks.cancel(p.id)),
  'tasks.update': method(
    z.object({
      id: z.string().min(1),
      status: z.enum(['accepted', 'working', 'completed', 'failed', 'rejected']),
      progress: z.number().min(0).max(100).optional(),
      message: z.string().max(1000).optional(),
      result: z.json().optional()
    }),
    async (mesh, { id, ...update }) => mesh.tasks.update(id, defined(update))
  ),
  'tools.list': method(z.object({ peer: z.string().min(1).optional() }).optional(), async (mesh, p) => mesh.tools.list(p?.peer)),
  'tools.call': method(
    z.object({ peer: z.string().min(1), name: z.string().min(1), args: z.json(), timeout: z.number().int().positive().optional() }),
    async (mesh, p, signal) => mesh.tools.call(p.peer, p.name, p.args, { signal, ...defined({ timeout: p.timeout }) })
  ),
  'audit.query': method(
    z.object({ trace: z.string().optional(), peer: z.string().optional(), id: z.string().optional(), since: z.number().optional(), until: z.number().optional(), limit: z.number().int().min(1).max(1000).optional(), cursor: z.string().optional() }).optional(),
    async (mesh, p) => mesh.audit.query(defined(p))
  ),
  trace: method(z.object({ id: z.string().min(1) }), async (mesh, p) => mesh.trace(p.id)),
  'policy.get': method(NoParams, async (mesh) => mesh.policy.get()),
  'policy.allow': method(z.object({ peer: z.string().min(1) }), async (mesh, p) => mesh.policy.allow(p.peer)),
  'policy.deny': method(z.object({ peer: z.string().min(1) }), async (mesh, p) => mesh.policy.deny(p.peer)),
  'policy.mode': method(z.object({ mode: z.enum(['open', 'allowlist']) }), async (mesh, p) => mesh.policy.mode(p.mode)),
  subscribe: method(z.object({ topic: z.string() }), async (mesh, p) => mesh.subscribe(p.topic)),
  unsubscribe: method(z.object({ topic: z.string() }), async (mesh, p) => mesh.unsubscribe(p.topic)),
  topics: method(NoParams, async (mesh) => mesh.topics()),
  broadcast: method(
    z.object({ topic: z.string(), body: z.json(), ttl: z.number().int().positive().optional(), thread: z.string().min(1).max(128).optional() }),
    async (mesh, { topic, body, ...options }) => mesh.broadcast(topic, body, defined(options))
  )
}
