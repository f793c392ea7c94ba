/**
 * Long polls: `mesh_wait` cancelled by the client ends the mesh wait promptly; progress
 * notifications arrive while waiting; the optional `claude/channel` push carries only a pointer
 * and marks nothing read.
 */
import { Client } from '@modelcontextprotocol/sdk/client/index.js'
import { afterEach, describe, expect, it } from 'vitest'
import { z } from 'zod'
import { CHANNEL_METHOD } from '../src/index.js'
import { call, link, TestBed, waitFor } from './harness.js'
import type { Progress } from '@modelcontextprotocol/sdk/types.js'
import type { Mesh } from '@persona-mesh/node'

/** `mesh` with `inbox.wait` instrumented: when each call started and how it ended. */
function spyWaits (mesh: Mesh): { mesh: Mesh, waits: Array<{ started: number, ended?: number, error?: string }> } {
  const waits: Array<{ started: number, ended?: number, error?: string }> = []
  const inbox = {
    ...mesh.inbox,
    wait: async (options: Parameters<Mesh['inbox']['wait']>[0]) => {
      const record: { started: number, ended?: number, error?: string } = { started: Date.now() }
      waits.push(record)
      try {
        return await mesh.inbox.wait(options)
      } catch (err) {
        record.error = (err as Error).name
        throw err
      } finally {
        record.ended = Date.now()
      }
    }
  }
  const proxy = new Proxy(mesh, {
    get (target, prop) {
      if (prop === 'inbox') return inbox
      const value = Reflect.get(target, prop, target)
      return typeof value === 'function' ? value.bind(target) : value
    }
  })
  return { mesh: proxy, waits }
}

describe('mesh_wait and push', () => {
  const bed = new TestBed()
  afterEach(async () => { await bed.teardown() })

  it('a wait cancelled by the client returns promptly and ends the mesh wait', async () => {
    const aria = await bed.node({ name: 'aria' })
    const spy = spyWaits(aria)
    const { client } = await bed.session(spy.mesh)
    const controller = new AbortController()
    const pending = client.callTool({ name: 'mesh_wait', arguments: { timeout_s: 300 } }, undefined, { signal: controller.signal, timeout: 600_000 })
    await waitFor(() => spy.waits.length === 1, 'the mesh wait to start')
    const abortedAt = Date.now()
    controller.abort('the user pressed Esc')
    await expect(pending).rejects.toThrow()
    await waitFor(() => spy.waits[0]?.ended !== undefined, 'the mesh wait to end')
    expect(spy.waits[0]!.error).toBe('AbortError')
    // prompt: long before the 300 s the wait asked for (generous bound for a shared machine)
    expect(spy.waits[0]!.ended! - abortedAt).toBeLessThan(5000)
    // the server serves on
    expect((await call(client, 'mesh_wait', { timeout_s: 0 })).timed_out).toBe(true)
  })

  it('sends progress notifications while waiting when the client gave a progress token', async () => {
    const aria = await bed.node({ name: 'aria' })
    const { client } = await bed.session(aria, { progressInterval: 100 })
    const progress: Progress[] = []
    const result = await client.callTool({ name: 'mesh_wait', arguments: { timeout_s: 1 } }, undefined, { onprogress: (p) => { progress.push(p) } })
    expect((result.structuredContent as any).timed_out).toBe(true)
    expect(progress.length).toBeGreaterThanOrEqual(2)
    expect(progress[0]).toMatchObject({ total: 1, message: expect.stringContaining('waiting for a message') })
    for (let i = 1; i < progress.length; i++) expect(progress[i]!.progress).toBeGreaterThan(progress[i - 1]!.progress)

    // no token, no notifications
    const stray: Error[] = []
    const quiet = new Client({ name: 'quiet', version: '0' })
    // a progress notification without a token the client asked for surfaces as an error
    quiet.onerror = (err) => { stray.push(err) }
    await bed.session(aria, { progressInterval: 100 }, quiet)
    await quiet.callTool({ name: 'mesh_wait', arguments: { timeout_s: 0.5 } })
    expect(stray).toEqual([])
  })

  it('a wait returns as soon as a matching message arrives', async () => {
    const aria = await bed.node({ name: 'aria' })
    const kira = await bed.node({ name: 'kira' })
    await link(aria, kira)
    const spy = spyWaits(aria)
    const { client } = await bed.session(spy.mesh)
    const pending = call(client, 'mesh_wait', { timeout_s: 60, from: 'kira' })
    await waitFor(() => spy.waits.length === 1, 'the mesh wait to start')
    const sent = await kira.send(aria.peerId, { text: 'ping' })
    const result = await pending
    expect(result).toMatchObject({ timed_out: false, messages: [{ id: sent.id, content: { body: { text: 'ping' } } }] })
  })

  it('--channel: a pointer per new message (id, sender, preview), nothing marked read; off by default', async () => {
    const aria = await bed.node({ name: 'aria' })
    const kira = await bed.node({ name: 'kira' })
    await link(aria, kira)
    const pushes: any[] = []
    const client = new Client({ name: 'claude-code-ish', version: '0' })
    client.setNotificationHandler(z.object({ method: z.literal(CHANNEL_METHOD), params: z.any() }) as any, (n: any) => { pushes.push(n.params) })
    await bed.session(aria, { channel: true }, client)
    expect(client.getServerCapabilities()?.experimental).toEqual({ 'claude/channel': {} })

    const off = await bed.session(aria)
    expect(off.client.getServerCapabilities()?.experimental).toBeUndefined()

    const long = `please look at this \u202Eevil ${'z'.repeat(500)}`
    const sent = await kira.send(aria.peerId, { text: long })
    await waitFor(() => pushes.length === 1, 'the channel push')
    const push = pushes[0]
    expect(push.meta).toEqual({ message_id: sent.id, kind: 'message', from_peer: kira.peerId, from_name: 'kira', verified: 'true' })
    expect(push.content).toContain(sent.id)
    expect(push.content).toContain('untrusted peer content')
    expect(push.content).not.toContain('\u202E')
    expect(push.content).not.toContain('z'.repeat(250))
    // a push never marks anything read
    const inbox = await call(client, 'mesh_inbox')
    expect(inbox.messages).toMatchObject([{ id: sent.id, acked: false }])
    expect(await aria.inbox.unread()).toBe(1)
  })
})
