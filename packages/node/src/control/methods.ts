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
  )
}
