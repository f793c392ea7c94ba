import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Client } from '@modelcontextprotocol/sdk/client/index.js'
import { InMemoryTransport } from '@modelcontextprotocol/sdk/inMemory.js'
import { createMeshNode } from '@persona-mesh/node'
import { expect } from 'vitest'
import { createMcpServer } from '../src/index.js'
import type { McpServerInit } from '../src/index.js'
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js'
import type { Mesh, MeshNode, MeshNodeInit } from '@persona-mesh/node'

import { waitFor } from '../../../test/support/wait-for.js'

export { waitFor }


export interface Session {
  client: Client
  close: () => Promise<void>
}

/** Real nodes on 127.0.0.1 (mDNS off, temp homes) and MCP clients attached over in-memory transports. */
export class TestBed {
  private readonly nodes: MeshNode[] = []
  private readonly homes: string[] = []
  private readonly sessions: Session[] = []

  async node (init: MeshNodeInit = {}): Promise<MeshNode> {
    const home = await mkdtemp(join(tmpdir(), 'pmesh-mcp-test-'))
    this.homes.push(home)
    const node = await createMeshNode({ name: `n${this.nodes.length}`, home, listen: ['/ip4/127.0.0.1/tcp/0'], mdns: false, ...init })
    this.nodes.push(node)
    return node
  }

  /** An MCP client talking to `createMcpServer(mesh)` over a linked in-memory pair. */
  async session (mesh: Mesh, options: McpServerInit = {}, client?: Client): Promise<Session> {
    const server = createMcpServer(mesh, options)
    const [clientSide, serverSide] = InMemoryTransport.createLinkedPair()
    await server.connect(serverSide)
    const c = client ?? new Client({ name: 'test', version: '0.0.0' })
    await c.connect(clientSide)
    const session = { client: c, close: async () => { await c.close(); await server.close() } }
    this.sessions.push(session)
    return session
  }

  async teardown (): Promise<void> {
    await Promise.allSettled(this.sessions.splice(0).map(async s => s.close()))
    await Promise.allSettled(this.nodes.splice(0).map(async n => n.stop()))
    await Promise.allSettled(this.homes.splice(0).map(async d => rm(d, { recursive: true, force: true })))
  }
}

/** Dial `b` from `a` and wait until each holds the other's verified card. */
export async function link (a: MeshNode, b: MeshNode): Promise<void> {
  if (a.libp2p.getConnections(b.libp2p.peerId).length === 0) await a.dial(b.multiaddrs[0]!)
  await waitFor(async () => (await a.cards()).some(c => c.peerId === b.peerId) && (await b.cards()).some(c => c.peerId === a.peerId), `cards between ${a.name} and ${b.name}`)
}

/** Call a tool, expect success, return its structuredContent (which always carries `inbox`). */
export async function call<T = any> (client: Client, name: string, args: Record<string, unknown> = {}): Promise<T & { inbox: { unread: number, cursor: string | null } }> {
  const result = await client.callTool({ name, arguments: args }) as CallToolResult
  if (result.isError === true) throw new Error(`${name} failed: ${JSON.stringify(result.content)}`)
  expect(result.content[0]).toMatchObject({ type: 'text' })
  const structured = result.structuredContent as any
  expect(structured.inbox).toEqual({ unread: expect.any(Number), cursor: expect.toSatisfy((c: unknown) => c === null || typeof c === 'string') })
  return structured
}

/** Call a tool and expect an `isError` result; returns its text. */
export async function callError (client: Client, name: string, args: Record<string, unknown>): Promise<string> {
  const result = await client.callTool({ name, arguments: args }) as CallToolResult
  expect(result.isError).toBe(true)
  const first = result.content[0]
  return first?.type === 'text' ? first.text : ''
}
