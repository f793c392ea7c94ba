import { afterEach, describe, expect, it } from 'vitest'
import { NackError } from '@persona-mesh/protocol'
import { TestMesh, waitFor } from './harness.js'

describe('rpc: direct requests between real nodes', () => {
  const mesh = new TestMesh()
  afterEach(async () => { await mesh.teardown() })

  it('answers a request by PeerId once connected, and by multiaddr', async () => {
    const a = await mesh.node()
    const b = await mesh.node()
    b.handle('greet', (body, ctx) => ({ hello: body, from: ctx.from }))
    expect(await a.request(b.multiaddrs[0], 'greet', 'by-addr')).toEqual({ hello: 'by-addr', from: a.peerId })
    expect(await a.request(b.peerId, 'greet', { n: 1 })).toEqual({ hello: { n: 1 }, from: a.peerId })
  })

  it('keeps 500 concurrent requests apart and answers each with its own body', async () => {
    const a = await mesh.node()
    const b = await mesh.node()
    b.handle('double', async (body) => {
      await new Promise(resolve => setImmediate(resolve))
      return (body as number) * 2
    }, { maxConcurrent: 500 })
    await a.dial(b.multiaddrs[0])
    const answers = await Promise.all(Array.from({ length: 500 }, async (_, i) => a.request(b.peerId, 'double', i)))
    expect(answers).toEqual(Array.from({ length: 500 }, (_, i) => i * 2))
  })

  it('refuses with typed NACK reasons: incapable, internal_error (no leak), a handler-chosen reason', async () => {
    const a = await mesh.node()
    const b = await mesh.node()
    b.handle('boom', () => { throw new Error('secret stack detail') })
    b.handle('picky', () => { throw new NackError('invalid_request', 'needs a number') })
    await a.dial(b.multiaddrs[0])

    const unknown = await a.request(b.peerId, 'nope', null).catch(e => e)
    expect(unknown).toBeInstanceOf(NackError)
    expect(unknown.reason).toBe('incapable')

    const boom = await a.request(b.peerId, 'boom', null).catch(e => e)
    expect(boom.name).toBe('NackError')
    expect(boom.reason).toBe('internal_error')
    expect(boom.message).not.toContain('secret')

    const picky = await a.request(b.peerId, 'picky', null).catch(e => e)
    expect(picky.reason).toBe('invalid_request')
    expect(picky.detail).toBe('needs a number')
  })

  it('answers overloaded beyond maxConcurrent per peer, and serves again once the load is gone', async () => {
    const a = await mesh.node()
    const b = await mesh.node()
    const release = Promise.withResolvers<void>()
    let started = 0
    b.handle('slow', async () => { started++; await release.promise; return 'done' }, { maxConcurrent: 2 })
    await a.dial(b.multiaddrs[0])
    const first = [a.request(b.peerId, 'slow', null), a.request(b.peerId, 'slow', null)]
    await waitFor(() => started === 2, 'two slow handlers running')
    const third = await a.request(b.peerId, 'slow', null).catch(e => e)
    expect(third.reason).toBe('overloaded')
    release.resolve()
    expect(await Promise.all(first)).toEqual(['done', 'done'])
    expect(await a.request(b.peerId, 'slow', null)).toBe('done')
  })

  it('bounds handlers: the server NACKs timeout, the client times out, the caller can abort', async () => {
    const a = await mesh.node()
    const b = await mesh.node()
    let aborted = 0
    let entered = 0
    const hang = async (_body: unknown, ctx: { signal: AbortSignal }): Promise<never> => new Promise((_resolve, reject) => {
      entered++
      ctx.signal.addEventListener('abort', () => { aborted++; reject(new Error('aborted')) })
    })
    b.handle('hang', hang, { timeout: 200 })
    b.handle('hang-long', hang)
    await a.dial(b.multiaddrs[0])

    const serverSide = await a.request(b.peerId, 'hang', null).catch(e => e)
    expect(serverSide.reason).toBe('timeout')

    const clientSide = await a.request(b.peerId, 'hang-long', null, { timeout: 300 }).catch(e => e)
    expect(clientSide.name).toBe('TimeoutError')

    const controller = new AbortController()
    const pending = a.request(b.peerId, 'hang-long', null, { signal: controller.signal }).catch(e => e)
    await waitFor(() => entered === 3, 'the third handler running')
    controller.abort()
    expect((await pending).name).toBe('AbortError')
    // the cancel frame reaches the server and aborts the handler
    await waitFor(() => aborted >= 3, 'handlers aborted on the server')
  })

  it('fails fast with PeerUnreachableError when the peer stops mid-request or is gone', async () => {
    const a = await mesh.node()
    const b = await mesh.node()
    const entered = Promise.withResolvers<void>()
    b.handle('forever', async () => { entered.resolve(); return new Promise(() => {}) })
    const addr = b.multiaddrs[0]
    await a.dial(addr)
    const pending = a.request(b.peerId, 'forever', null, { timeout: 20_000 }).catch(e => e)
    await entered.promise
    await b.stop()
    const err = await pending
    expect(err.name).toBe('PeerUnreachableError')

    const gone = await a.request(addr, 'forever', null, { timeout: 10_000 }).catch(e => e)
    expect(gone.name).toBe('PeerUnreachableError')
  })

  it('refuses an oversized request locally and an oversized response with too_large', async () => {
    const a = await mesh.node()
    const b = await mesh.node({ rpc: { maxFrameSize: 64 * 1024 } })
    b.handle('big', () => 'x'.repeat(100 * 1024))
    await a.dial(b.multiaddrs[0])
    const local = await a.request(b.peerId, 'echo', 'x'.repeat(300 * 1024)).catch(e => e)
    expect(local.name).toBe('TooLargeError')
    const remote = await a.request(b.peerId, 'big', null).catch(e => e)
    expect(remote.reason).toBe('too_large')
  })

  it('reserves mesh.* method names and answers the built-in mesh.echo', async () => {
    const a = await mesh.node()
    const b = await mesh.node()
    expect(() => { b.handle('mesh.echo', () => null) }).toThrow(/reserved/)
    expect(await a.request(b.multiaddrs[0], 'mesh.echo', { ping: true })).toEqual({ ping: true })
  })

  it('start and stop are idempotent, and a stopped node refuses requests with NotStartedError', async () => {
    const a = await mesh.node()
    await Promise.all([a.start(), a.start()])
    expect(a.isStarted).toBe(true)
    await Promise.all([a.stop(), a.stop()])
    expect(a.isStarted).toBe(false)
    const err = await a.request(a.peerId, 'mesh.echo', null).catch(e => e)
    expect(err.name).toBe('NotStartedError')
    await a.start()
    expect((await a.status()).running).toBe(true)
  })

  it('emits typed peer:connect and peer:disconnect events', async () => {
    const a = await mesh.node()
    const b = await mesh.node()
    const connected: string[] = []
    const disconnected: string[] = []
    a.addEventListener('peer:connect', (evt) => { connected.push(evt.detail) })
    a.addEventListener('peer:disconnect', (evt) => { disconnected.push(evt.detail) })
    await a.dial(b.multiaddrs[0])
    await waitFor(() => connected.includes(b.peerId), 'peer:connect')
    await b.stop()
    await waitFor(() => disconnected.includes(b.peerId), 'peer:disconnect')
  })
})
