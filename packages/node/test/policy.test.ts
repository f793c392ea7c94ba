/**
 * Trust policy between real nodes in this process (TCP on 127.0.0.1, mDNS off, temp homes):
 * allowlist mode and its quarantine, refusing unknown senders, allow/deny (saved to config.json),
 * per-tool and per-capability grants, and per-peer rate limits on requests, tasks and deliveries.
 * Waits are on conditions with timeouts; nothing asserts on time.
 */
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { MeshNode } from '@persona-mesh/node'
import { NackError } from '@persona-mesh/protocol'
import { afterEach, describe, expect, it } from 'vitest'
import { z } from 'zod'
import { TestMesh, waitFor } from './harness.js'

async function link (a: MeshNode, b: MeshNode): Promise<void> {
  if (a.libp2p.getConnections(b.libp2p.peerId).length === 0) await a.dial(b.multiaddrs[0]!)
  await waitFor(async () => (await a.cards()).some(c => c.peerId === b.peerId) && (await b.cards()).some(c => c.peerId === a.peerId), `cards between ${a.name} and ${b.name}`)
}

async function nack (promise: Promise<unknown>): Promise<NackError> {
  const err = await promise.then(() => undefined, (e: unknown) => e)
  expect(err).toBeInstanceOf(NackError)
  return err as NackError
}

interface Outcome { id: string, to: string, reason?: string }

function record (node: MeshNode, type: 'message:delivered' | 'message:failed'): Outcome[] {
  const seen: Outcome[] = []
  node.addEventListener(type, (evt) => { seen.push(evt.detail) })
  return seen
}

async function savedPolicy (node: MeshNode): Promise<{ mode?: string, allow?: string[], deny?: string[] } | undefined> {
  const text = await readFile(join(node.dataDir, 'config.json'), 'utf8').catch(() => undefined)
  return text === undefined ? undefined : (JSON.parse(text) as { policy?: { mode?: string, allow?: string[], deny?: string[] } }).policy
}

describe('policy: who may do what', () => {
  const mesh = new TestMesh()
  afterEach(async () => { await mesh.teardown() })

  it('allowlist: an unknown peer\'s requests, tool calls and tasks are refused unauthorized; its messages go to quarantine', async () => {
    const owner = await mesh.node({ name: 'owner', policy: { mode: 'allowlist' }, card: { capabilities: ['review'] } })
    const friend = await mesh.node({ name: 'friend' })
    const stranger = await mesh.node({ name: 'stranger' })
    await owner.policy.allow(friend.peerId)
    owner.handle('hello', (_body, ctx) => `hi ${ctx.from}`)
    await owner.tools.register('lookup', { inputSchema: z.any(), handler: () => 'found' })
    owner.tasks.handle('review', () => 'reviewed')
    await link(owner, friend)
    await link(owner, stranger)

    const refused = await nack(stranger.request(owner.peerId, 'hello', null))
    expect(refused.reason).toBe('unauthorized')
    expect((await nack(stranger.request(owner.peerId, 'mesh.echo', 1))).reason).toBe('unauthorized')
    expect((await nack(stranger.tools.call(owner.peerId, 'lookup', {}))).reason).toBe('unauthorized')
    expect(await friend.request(owner.peerId, 'hello', null)).toBe(`hi ${friend.peerId}`)
    expect(await friend.tools.call(owner.peerId, 'lookup', {})).toBe('found')

    const received: string[] = []
    owner.addEventListener('message:received', (evt) => { received.push(evt.detail.id) })
    const delivered = record(stranger, 'message:delivered')
    const fromStranger = await stranger.send(owner.peerId, { text: 'let me in' })
    const fromFriend = await friend.send(owner.peerId, { text: 'hello' })
    await waitFor(() => delivered.some(d => d.id === fromStranger.id), 'the stranger\'s message accepted (into quarantine)')
    await waitFor(async () => (await owner.inbox.read()).entries.some(e => e.id === fromFriend.id), 'the friend\'s message in the inbox')

    const inbox = await owner.inbox.read({ limit: 1000 })
    expect(inbox.entries.some(e => e.id === fromStranger.id)).toBe(false)
    const quarantine = await owner.inbox.read({ quarantined: true })
    expect(quarantine.entries.map(e => e.id)).toEqual([fromStranger.id])
    expect(quarantine.entries[0]).toMatchObject({ from: stranger.peerId, body: { text: 'let me in' }, quarantined: true })
    expect((await owner.status()).inbox.quarantined).toBe(1)
    expect(await owner.inbox.unread()).toBe(1)

    // a stranger's delegation is parked too: no task is created, the handler never runs
    const task = await stranger.delegate(owner.peerId, null, { capability: 'review', timeout: 60_000 })
    await waitFor(async () => (await owner.inbox.read({ quarantined: true, kind: 'task.delegate' })).entries.length === 1, 'the delegation in quarantine')
    expect(await owner.tasks.get(task.id)).toBeUndefined()
    expect((await stranger.tasks.get(task.id))!.status).toBe('submitted')
    // the friend's task runs
    const friendly = await friend.delegate(owner.peerId, null, { capability: 'review' })
    expect(await friend.tasks.result(friendly.id, { timeout: 30_000 })).toBe('reviewed')
    // the refusals are in the owner's audit log
    await waitFor(async () => (await owner.audit.query({ peer: stranger.peerId })).entries.some(e => e.outcome === 'quarantined'), 'quarantine audited')
  })

  it('allowlist with quarantineUnknown:false: the sender\'s message ends failed (unauthorized), with an event and in the outbox', async () => {
    const owner = await mesh.node({ name: 'owner', policy: { mode: 'allowlist', quarantineUnknown: false } })
    const stranger = await mesh.node({ name: 'stranger' })
    await link(owner, stranger)
    const failed = record(stranger, 'message:failed')
    const delivered = record(stranger, 'message:delivered')
    const sent = await stranger.send(owner.peerId, 'knock knock')
    await waitFor(() => failed.some(f => f.id === sent.id), 'message:failed')
    const event = failed.find(f => f.id === sent.id)!
    expect(event.to).toBe(owner.peerId)
    expect(event.reason).toMatch(/^unauthorized/)
    expect(await stranger.outbox.get(sent.id)).toMatchObject({ id: sent.id, status: 'failed', reason: expect.stringMatching(/^unauthorized/) })
    expect(delivered).toEqual([])
    expect((await owner.inbox.read({ quarantined: true })).entries).toEqual([])
    expect((await owner.inbox.read()).entries).toEqual([])
  })

  it('policy.allow lets a peer in and is saved to config.json; a restart without init policy keeps it', async () => {
    const home = await mesh.home()
    const owner = await mesh.node({ name: 'owner', home, policy: { mode: 'allowlist' } })
    const peer = await mesh.node({ name: 'peer' })
    owner.handle('hello', () => 'hi')
    await link(owner, peer)
    expect((await nack(peer.request(owner.peerId, 'hello', null))).reason).toBe('unauthorized')

    const after = await owner.policy.allow(peer.peerId)
    expect(after).toMatchObject({ mode: 'allowlist', allow: [peer.peerId], deny: [] })
    expect(await owner.policy.get()).toEqual(after)
    expect(await savedPolicy(owner)).toMatchObject({ mode: 'allowlist', allow: [peer.peerId] })
    expect(await peer.request(owner.peerId, 'hello', null)).toBe('hi')
    const sent = await peer.send(owner.peerId, 'now in the inbox')
    await waitFor(async () => (await owner.inbox.read()).entries.some(e => e.id === sent.id), 'the message in the inbox')
    expect((await owner.inbox.read({ quarantined: true })).entries).toEqual([])

    // restart from config.json alone
    await owner.stop()
    const again = await mesh.node({ name: 'owner', home })
    again.handle('hello', () => 'hi again')
    expect((await again.policy.get())).toMatchObject({ mode: 'allowlist', allow: [peer.peerId] })
    await peer.dial(again.multiaddrs[0]!)
    expect(await peer.request(again.peerId, 'hello', null)).toBe('hi again')
    const third = await mesh.node({ name: 'third' })
    await third.dial(again.multiaddrs[0]!)
    expect((await nack(third.request(again.peerId, 'hello', null))).reason).toBe('unauthorized')
  })

  it('a policy written in config.json before start is honoured', async () => {
    const home = await mesh.home()
    const friend = await mesh.node({ name: 'friend' })
    const other = await mesh.node({ name: 'other' })
    await mkdir(join(home, 'owner'), { recursive: true })
    await writeFile(join(home, 'owner', 'config.json'), JSON.stringify({ policy: { mode: 'allowlist', allow: [friend.peerId] } }))
    const owner = await mesh.node({ name: 'owner', home })
    owner.handle('hello', () => 'hi')
    expect(await friend.request(owner.multiaddrs[0]!, 'hello', null)).toBe('hi')
    expect((await nack(other.request(owner.multiaddrs[0]!, 'hello', null))).reason).toBe('unauthorized')
  })

  it('deny shuts a peer out in open mode (requests, messages, tasks); allow lets it back', async () => {
    const owner = await mesh.node({ name: 'owner', card: { capabilities: ['review'] } })
    const bad = await mesh.node({ name: 'bad' })
    const good = await mesh.node({ name: 'good' })
    owner.handle('hello', () => 'hi')
    owner.tasks.handle('review', () => 'reviewed')
    await link(owner, bad)
    await link(owner, good)
    expect(await bad.request(owner.peerId, 'hello', null)).toBe('hi')

    const denied = await owner.policy.deny('bad')
    expect(denied).toMatchObject({ mode: 'open', deny: [bad.peerId] })
    expect(await savedPolicy(owner)).toMatchObject({ deny: [bad.peerId] })
    expect((await nack(bad.request(owner.peerId, 'hello', null))).reason).toBe('unauthorized')
    expect(await good.request(owner.peerId, 'hello', null)).toBe('hi')

    const failed = record(bad, 'message:failed')
    const sent = await bad.send(owner.peerId, 'still here?')
    await waitFor(() => failed.some(f => f.id === sent.id), 'the message refused')
    expect(failed.find(f => f.id === sent.id)!.reason).toMatch(/^unauthorized/)
    expect((await owner.inbox.read({ quarantined: true })).entries).toEqual([])

    await owner.policy.allow(bad.peerId)
    expect((await owner.policy.get()).deny).toEqual([])
    expect(await bad.request(owner.peerId, 'hello', null)).toBe('hi')
  })

  // Regression (fixed): when the delegation envelope itself is refused (deny list, or allowlist with
  // quarantineUnknown:false) the outbox record ends `failed: unauthorized`, but the task is never
  // told: it stays `submitted` until its deadline (1 h by default). Fix: give TaskService a
  // delivery-failure hook (mesh-node forwards DeliveryService 'message:failed'); when the failed
  // id is a task's `delegateId`, run `onRejected(info, reason-before-':', message)` under the
  // task's lock (falls over to the next candidate, else ends `rejected`).
  it('a delegation refused at delivery (denied peer) ends the task rejected unauthorized, not submitted until the deadline', async () => {
    const owner = await mesh.node({ name: 'owner', card: { capabilities: ['review'] } })
    const bad = await mesh.node({ name: 'bad' })
    owner.tasks.handle('review', () => 'reviewed')
    await link(owner, bad)
    await owner.policy.deny(bad.peerId)
    const failed = record(bad, 'message:failed')
    const task = await bad.delegate(owner.peerId, null, { capability: 'review', timeout: 10 * 60_000 })
    await waitFor(() => failed.length > 0, 'the delegation envelope refused')
    const end = await waitFor(async () => {
      const t = await bad.tasks.get(task.id)
      return t !== undefined && t.status !== 'submitted' ? t : undefined
    }, 'the task to end', 15_000)
    expect(end).toMatchObject({ status: 'rejected', error: { reason: 'unauthorized' } })
  })

  it('a per-tool grant lets the listed peer call it and refuses others; ungranted tools stay open', async () => {
    const a = await mesh.node({ name: 'a' })
    const b = await mesh.node({ name: 'b' })
    const owner = await mesh.node({ name: 'owner', policy: { grants: [{ tool: 'analyze_code', peers: [a.peerId] }] } })
    await owner.tools.register('analyze_code', { inputSchema: z.object({ code: z.string() }), handler: (args: { code: string }) => args.code.length })
    await owner.tools.register('ping_tool', { inputSchema: z.any(), handler: () => 'pong' })
    await link(owner, a)
    await link(owner, b)
    expect(await a.tools.call(owner.peerId, 'analyze_code', { code: 'abc' })).toBe(3)
    const refused = await nack(b.tools.call(owner.peerId, 'analyze_code', { code: 'abc' }))
    expect(refused.reason).toBe('unauthorized')
    expect(refused.detail).toContain('analyze_code')
    // the grant is checked before the arguments: b learns nothing about the schema
    expect((await nack(b.tools.call(owner.peerId, 'analyze_code', { wrong: 1 }))).reason).toBe('unauthorized')
    expect((await nack(a.tools.call(owner.peerId, 'analyze_code', { wrong: 1 }))).reason).toBe('invalid_request')
    expect(await b.tools.call(owner.peerId, 'ping_tool', null)).toBe('pong')
    // b may still make plain requests: the grant is about the tool
    expect(await b.request(owner.peerId, 'mesh.echo', 'ok')).toBe('ok')
    await waitFor(async () => (await owner.audit.query({ peer: b.peerId })).entries.some(e => e.kind === 'tool.call' && e.outcome === 'refused: unauthorized'), 'the refusal audited')
  })

  it('a per-capability grant: the listed peer\'s task runs, another peer\'s is rejected unauthorized (no fall-over)', async () => {
    const a = await mesh.node({ name: 'a' })
    const b = await mesh.node({ name: 'b' })
    const owner = await mesh.node({ name: 'owner', card: { capabilities: ['review', 'lint'] }, policy: { grants: [{ capability: 'review', peers: [a.peerId] }] } })
    const ran: string[] = []
    owner.tasks.handle('review', (_input, ctx) => { ran.push(ctx.from); return 'reviewed' })
    owner.tasks.handle('lint', () => 'linted')
    await link(owner, a)
    await link(owner, b)
    const fromA = await a.delegate(owner.peerId, null, { capability: 'review' })
    expect(await a.tasks.result(fromA.id, { timeout: 30_000 })).toBe('reviewed')
    const fromB = await b.delegate(owner.peerId, null, { capability: 'review' })
    const err = await b.tasks.result(fromB.id, { timeout: 30_000 }).catch(e => e)
    expect(err).toMatchObject({ name: 'TaskFailedError', status: 'rejected', reason: 'unauthorized' })
    expect(await owner.tasks.get(fromB.id)).toMatchObject({ status: 'rejected', error: { reason: 'unauthorized' } })
    expect(ran).toEqual([a.peerId])
    const lint = await b.delegate(owner.peerId, null, { capability: 'lint' })
    expect(await b.tasks.result(lint.id, { timeout: 30_000 })).toBe('linted')
  })

  it('per-peer request rate limit: past the burst a peer gets overloaded, another peer is still served', async () => {
    const owner = await mesh.node({ name: 'owner', policy: { rateLimits: { requests: { rate: 0.5, burst: 5 } } } })
    const greedy = await mesh.node({ name: 'greedy' })
    const polite = await mesh.node({ name: 'polite' })
    owner.handle('work', (body) => body)
    await greedy.dial(owner.multiaddrs[0]!)
    await polite.dial(owner.multiaddrs[0]!)
    const results = await Promise.all(Array.from({ length: 20 }, async (_, i) => greedy.request(owner.peerId, 'work', i).then(() => 'ok', (e: NackError) => e.reason)))
    const ok = results.filter(r => r === 'ok').length
    expect(ok).toBeGreaterThanOrEqual(1)
    expect(ok).toBeLessThanOrEqual(8)
    expect(results.filter(r => r === 'overloaded').length).toBe(20 - ok)
    expect(await polite.request(owner.peerId, 'work', 'served')).toBe('served')
    const err = await nack(greedy.request(owner.peerId, 'work', 'again'))
    expect(err.reason).toBe('overloaded')
    expect(err.detail).toContain('rate limit')
  })

  it('per-peer delivery rate limit: overloaded deliveries are retried by the sender and all arrive once', async () => {
    const owner = await mesh.node({ name: 'owner', policy: { rateLimits: { deliveries: { rate: 5, burst: 3 } } } })
    const sender = await mesh.node({ name: 'sender' })
    await link(owner, sender)
    const sent = []
    for (let i = 0; i < 10; i++) sent.push(await sender.send(owner.peerId, i))
    await waitFor(async () => {
      const statuses = await Promise.all(sent.map(async s => (await sender.outbox.get(s.id))?.status))
      return statuses.every(s => s === 'delivered')
    }, 'all ten delivered', 60_000)
    const inbox = (await owner.inbox.read({ limit: 100 })).entries.filter(e => e.from === sender.peerId)
    expect(inbox.map(e => e.body).sort((x, y) => (x as number) - (y as number))).toEqual(Array.from({ length: 10 }, (_, i) => i))
    await waitFor(async () => (await owner.audit.query({ peer: sender.peerId, limit: 1000 })).entries.some(e => e.outcome === 'refused: overloaded'), 'an overloaded refusal audited')
  })

  it('policy.mode switches at runtime and is saved', async () => {
    const owner = await mesh.node({ name: 'owner' })
    const peer = await mesh.node({ name: 'peer' })
    owner.handle('hello', () => 'hi')
    await link(owner, peer)
    expect(await peer.request(owner.peerId, 'hello', null)).toBe('hi')
    expect(await owner.policy.mode('allowlist')).toMatchObject({ mode: 'allowlist' })
    expect(await savedPolicy(owner)).toMatchObject({ mode: 'allowlist' })
    expect((await nack(peer.request(owner.peerId, 'hello', null))).reason).toBe('unauthorized')
    await owner.policy.mode('open')
    expect(await peer.request(owner.peerId, 'hello', null)).toBe('hi')
  })
})
