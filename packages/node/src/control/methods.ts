import { z } from 'zod'
import type { Mesh } from '../mesh.js'

export interface ControlMethodEntry<P = any> {
  params: z.ZodType<P, any>
  run(mesh: Mesh, params: P, signal: AbortSignal): Promise<unknown>
}

function method<S extends z.ZodType> (params: S, run: (mesh: Mesh, params: z.infer<S>, signal: AbortSignal) => Promise<unknown>): ControlMethodEntry<z.infer<S>> {
  return { params: params as z.ZodType<z.infer<S>, any>, run }
}

const NoParams = z.object({}).optional()

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
    async (mesh, p) => mesh.updateCard(p)
  )
}
