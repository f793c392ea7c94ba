import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createMeshNode } from '@persona-mesh/node'
import type { MeshNode, MeshNodeInit } from '@persona-mesh/node'

import { waitFor } from '../../../test/support/wait-for.js'

export { waitFor }

/** Nodes on 127.0.0.1 with mDNS off, each persona in a fresh temp home; `teardown()` stops them and removes the dirs. */
export class TestMesh {
  readonly nodes: MeshNode[] = []
  private readonly homes: string[] = []

  async home (): Promise<string> {
    const dir = await mkdtemp(join(tmpdir(), 'pmesh-test-'))
    this.homes.push(dir)
    return dir
  }

  async node (init: MeshNodeInit = {}): Promise<MeshNode> {
    const node = await createMeshNode({
      name: `n${this.nodes.length}`,
      home: init.home ?? await this.home(),
      listen: ['/ip4/127.0.0.1/tcp/0'],
      mdns: false,
      ...init
    })
    this.nodes.push(node)
    return node
  }

  async teardown (): Promise<void> {
    await Promise.allSettled(this.nodes.map(async n => { await n.stop() }))
    this.nodes.length = 0
    await Promise.allSettled(this.homes.map(async d => { await rm(d, { recursive: true, force: true }) }))
    this.homes.length = 0
  }
}
