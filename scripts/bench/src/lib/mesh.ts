import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { pathToFileURL } from 'node:url'
import type { MeshNode, MeshNodeInit } from '@persona-mesh/node'

/**
 * `PMESH_BENCH_MESH_MODULE=/path/to/packages/node/dist/index.js` measures another build of
 * `@persona-mesh/node` (e.g. a candidate change in a scratch copy) against the same baseline.
 * The run document records it as `meshModule`.
 */
export const MESH_MODULE_ENV = 'PMESH_BENCH_MESH_MODULE'

/** Set by the harness: one temporary directory per run, removed by the parent even if a worker is killed. */
export const TMP_ROOT_ENV = 'PMESH_BENCH_TMP'

export function meshModuleOverride (): string | undefined {
  const value = process.env[MESH_MODULE_ENV]
  return value === undefined || value === '' ? undefined : resolve(value)
}

export async function loadMeshModule (): Promise<typeof import('@persona-mesh/node')> {
  const override = meshModuleOverride()
  return override === undefined ? await import('@persona-mesh/node') : await import(pathToFileURL(override).href)
}

/**
 * A mesh node for a benchmark role: its own temporary home, loopback only, mDNS off.
 * `close()` stops it and removes the home.
 */
export async function startMeshNode (name: string, init: Partial<MeshNodeInit> = {}): Promise<{ node: MeshNode, close(): Promise<void> }> {
  const { createMeshNode } = await loadMeshModule()
  const home = await mkdtemp(join(process.env[TMP_ROOT_ENV] || tmpdir(), `pmesh-bench-${name}-`))
  try {
    const node = await createMeshNode({ listen: ['/ip4/127.0.0.1/tcp/0'], ...init, name, home, mdns: false })
    return {
      node,
      close: async () => {
        try {
          await node.stop()
        } finally {
          await rm(home, { recursive: true, force: true })
        }
      }
    }
  } catch (err) {
    await rm(home, { recursive: true, force: true })
    throw err
  }
}

/** The node's `/ip4/127.0.0.1/tcp/…/p2p/…` address. */
export function loopbackAddr (addrs: string[]): string {
  const addr = addrs.find(a => a.startsWith('/ip4/127.0.0.1/tcp/') && a.includes('/p2p/'))
  if (addr === undefined) throw new Error(`no loopback address among ${addrs.join(', ')}`)
  return addr
}
