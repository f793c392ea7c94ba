import { join } from 'node:path'
import { createConnection } from 'node:net'
import { stat } from 'node:fs/promises'
import { afterEach, describe, expect, it } from 'vitest'
import { CONTROL_SOCKET, connectMesh, serveControl } from '@persona-mesh/node'
import { TestMesh, waitFor } from './harness.js'
import type { ControlServer } from '@persona-mesh/node'

describe('control socket: the Mesh API of a running node over JSON-RPC', () => {
  const mesh = new TestMesh()
  const servers: ControlServer[] = []
  afterEach(async () => {
    await Promise.allSettled(servers.map(async s => { await s.close() }))
    servers.length = 0
    await mesh.teardown()
  })

  async function daemon (name: string): Promise<{ home: string, socket: string }> {
    const home = await mesh.home()
    const node = await mesh.node({ name, home })
    const socket = join(node.dataDir, CONTROL_SOCKET)
    servers.push(await serveControl(node, socket))
    return { home, socket }
  }

  it('serves status and requests to a client attached by persona name, with a 0600 socket', async () => {
    const { home, socket } = await daemon('aria')
    expect((await stat(socket)).mode & 0o777).toBe(0o600)
    const other = await mesh.node()
    other.handle('hi', (body) => `hi ${body as string}`)

    const remote = await connectMesh({ name: 'aria', home })
    try {
      const status = await remote.status()
      expect(status.name).toBe('aria')
      expect(remote.peerId).toBe(status.peerId)
      expect(await remote.request(other.multiaddrs[0], 'hi', 'there')).toBe('hi there')
    } finally {
      remote.close()
    }
  })

  it('carries typed errors across the socket (NackError reason, TimeoutError, InvalidArgumentError)', async () => {
    const { home } = await daemon('aria')
    const other = await mesh.node()
    other.handle('slow', async () => new Promise(resolve => setTimeout(resolve, 5000)))
    const remote = await connectMesh({ name: 'aria', home })
    try {
      const nack = await remote.request(other.multiaddrs[0], 'missing', null).catch(e => e)
      expect(nack.name).toBe('NackError')
      expect(nack.reason).toBe('incapable')
      const timeout = await remote.request(other.peerId, 'slow', null, { timeout: 200 }).catch(e => e)
      expect(timeout.name).toBe('TimeoutError')
      const invalid = await remote.call('request', { peer: 7 }).catch(e => e)
      expect(invalid.name).toBe('InvalidArgumentError')
      const unknown = await remote.call('no.such.method').catch(e => e)
      expect(unknown.message).toMatch(/unknown method/)
    } finally {
      remote.close()
    }
  })

  it('forwards events to attached clients', async () => {
    const { home } = await daemon('aria')
    const remote = await connectMesh({ name: 'aria', home })
    try {
      const seen: string[] = []
      remote.addEventListener('peer:connect', (evt) => { seen.push(evt.detail) })
      const other = await mesh.node()
      await remote.dial(other.multiaddrs[0])
      await waitFor(() => seen.includes(other.peerId), 'peer:connect event over the socket')
    } finally {
      remote.close()
    }
  })

  it('says how to start a daemon when none runs, and refuses a second daemon on the same socket', async () => {
    const home = await mesh.home()
    const err = await connectMesh({ name: 'ghost', home }).catch(e => e)
    expect(err.name).toBe('NoDaemonError')
    expect(err.message).toContain('pmesh start --name ghost')

    const { socket } = await daemon('aria')
    const node = await mesh.node()
    const second = await serveControl(node, socket).catch(e => e)
    expect(second.name).toBe('AlreadyRunningError')
  })

  it('survives garbage on the socket and keeps serving', async () => {
    const { home, socket } = await daemon('aria')
    const answers: string[] = []
    const raw = createConnection(socket)
    raw.setEncoding('utf8')
    raw.on('data', (chunk: string) => { answers.push(...chunk.split('\n').filter(Boolean)) })
    await new Promise<void>(resolve => raw.once('connect', () => { resolve() }))
    raw.write('this is not json\n{"jsonrpc":"1.0","id":1}\n[1,2,3]\n')
    await waitFor(() => answers.length >= 3, 'three error answers')
    expect(answers.map(a => JSON.parse(a).error.code)).toEqual([-32700, -32600, -32600])
    raw.destroy()

    const remote = await connectMesh({ name: 'aria', home })
    expect((await remote.status()).running).toBe(true)
    remote.close()
  })

  it('fails pending calls with a clear error when the daemon goes away', async () => {
    const { home } = await daemon('aria')
    const other = await mesh.node()
    other.handle('slow', async () => new Promise(resolve => setTimeout(resolve, 10_000)))
    const remote = await connectMesh({ name: 'aria', home })
    const pending = remote.request(other.multiaddrs[0], 'slow', null).catch(e => e)
    await waitFor(async () => (await other.status()).peers.length > 0, 'the daemon connected to the peer')
    await servers[0]!.close()
    const err = await pending
    expect(err.name).toBe('ControlConnectionError')
  })
})
