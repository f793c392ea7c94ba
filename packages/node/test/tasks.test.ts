/**
 * Task delegation between real nodes in this process (TCP on 127.0.0.1, mDNS off, LevelDB in temp
 * homes): lifecycle and progress, choosing a worker by capability, offline workers and delegators,
 * fall-over on `incapable`/`overloaded`, loops and `maxHops`, cancel (and cancel racing
 * completion), a worker stopped mid-task, floods, agents as workers (`tasks.update`), trace and
 * audit. Every wait is on a condition with a timeout; nothing asserts on time.
 */

import { join } from 'node:path'
import { loadOrCreateIdentity } from '@persona-mesh/node'
import type { MeshNode, TaskContext, TaskInfo } from '@persona-mesh/node'
import type { JsonValue, TaskState, TaskTree } from '@persona-mesh/protocol'
import { newId, newTrace, TERMINAL_TASK_STATES, traceId } from '@persona-mesh/protocol'
import { afterEach, describe, expect, it } from 'vitest'
import { TestMesh, waitFor } from './harness.js'

/** Dial `b` from `a` (unless connected) and wait until each holds the other's verified card. */
async function link (a: MeshNode, b: MeshNode): Promise<void> {
  if (a.libp2p.getConnections(b.libp2p.peerId).length === 0) await a.dial(b.multiaddrs[0]!)
  await waitFor(async () => (await a.cards()).some(c => c.peerId === b.peerId) && (await b.cards()).some(c => c.peerId === a.peerId), `cards between ${a.name} and ${b.name}`)
}

/** Wait until `node` finds exactly `peers` offering `capability` (from verified cards, no DHT). */
async function offering (node: MeshNode, capability: string, peers: MeshNode[]): Promise<void> {
  const want = peers.map(p => p.peerId).sort()
  await waitFor(async () => {
    const found = (await node.find(capability, { dht: false, limit: 50 })).filter(r => r.card.capabilities.some(c => c.name === capability)).map(r => r.peerId).sort()
    return JSON.stringify(found) === JSON.stringify(want)
  }, `${node.name} to see ${capability} on ${peers.map(p => p.name).join(', ')}`)
}

/** Every `task:update` of `node` from now on. */
function updates (node: MeshNode): TaskInfo[] {
  const seen: TaskInfo[] = []
  node.addEventListener('task:update', (evt) => { seen.push(evt.detail) })
  return seen
}

/** Statuses of one task in event order, consecutive repeats collapsed. */
function statusPath (events: TaskInfo[], id: string): TaskState[] {
  const out: TaskState[] = []
  for (const e of events) if (e.id === id && out.at(-1) !== e.status) out.push(e.status)
  return out
}

function terminal (status: TaskState | undefined): boolean {
  return status !== undefined && TERMINAL_TASK_STATES.has(status)
}

async function ended (node: MeshNode, id: string, what: string, timeout = 30_000): Promise<TaskInfo> {
  return waitFor(async () => {
    const t = await node.tasks.get(id)
    return terminal(t?.status) ? t : undefined
  }, what, timeout)
}

describe('tasks: delegation between live nodes', () => {
  const mesh = new TestMesh()
  const cleanups: Array<() => void> = []
  afterEach(async () => {
    for (const fn of cleanups.splice(0)) fn()
    await mesh.teardown()
  })

  /** A promise the test opens; opened at teardown at the latest so no handler hangs. */
  function gate (): PromiseWithResolvers<void> {
    const g = Promise.withResolvers<void>()
    cleanups.push(() => { g.resolve() })
    return g
  }

  it('lifecycle: submitted → accepted → working (progress) → completed, result on both sides', async () => {
    const d = await mesh.node({ name: 'delegator' })
    const w = await mesh.node({ name: 'worker', card: { capabilities: ['summarize'] } })
    const step1 = gate()
    const step2 = gate()
    const contexts: TaskContext[] = []
    w.tasks.handle('summarize', async (input: { text: string }, ctx) => {
      contexts.push(ctx)
      ctx.progress(25, 'reading')
      await step1.promise
      ctx.progress(75, 'writing')
      await step2.promise
      return { summary: input.text.slice(0, 5), words: input.text.split(' ').length }
    })
    await link(d, w)
    const seen = updates(d)

    const task = await d.delegate(w.peerId, { text: 'hello brave new world' }, { capability: 'summarize', timeout: 60_000, priority: 'high' })
    expect(task).toMatchObject({ direction: 'outgoing', peer: w.peerId, capability: 'summarize', input: { text: 'hello brave new world' }, hop: 0, path: [d.peerId] })
    expect(['submitted', 'accepted', 'working']).toContain(task.status)

    await waitFor(() => seen.some(e => e.id === task.id && e.status === 'working' && e.progress === 25), 'progress 25 on the delegator')
    expect(seen.find(e => e.id === task.id && e.progress === 25)?.message).toBe('reading')
    step1.resolve()
    await waitFor(() => seen.some(e => e.id === task.id && e.status === 'working' && e.progress === 75), 'progress 75 on the delegator')
    step2.resolve()

    expect(await d.tasks.result(task.id, { timeout: 30_000 })).toEqual({ summary: 'hello', words: 4 })
    await waitFor(() => seen.some(e => e.id === task.id && e.status === 'completed'), 'the completed task:update')
    expect(statusPath(seen, task.id)).toEqual(['submitted', 'accepted', 'working', 'completed'])
    // progress on the delegator never went backwards
    const progress = seen.filter(e => e.id === task.id && e.progress !== undefined).map(e => e.progress!)
    expect(progress).toEqual([...progress].sort((a, b) => a - b))

    const mine = await d.tasks.get(task.id)
    expect(mine).toMatchObject({ id: task.id, direction: 'outgoing', status: 'completed', progress: 100, result: { summary: 'hello', words: 4 } })
    expect(mine!.history.map(h => h.status)).toEqual(['submitted', 'accepted', 'working', 'completed'])
    const theirs = await ended(w, task.id, 'the worker to record the end')
    expect(theirs).toMatchObject({ id: task.id, direction: 'incoming', peer: d.peerId, status: 'completed', mode: 'handler', result: { summary: 'hello', words: 4 }, deadline: task.deadline })
    expect(traceId(theirs.trace)).toBe(traceId(task.trace))

    expect(contexts).toHaveLength(1)
    expect(contexts[0]).toMatchObject({ taskId: task.id, from: d.peerId, capability: 'summarize', deadline: task.deadline })
    expect(contexts[0]!.signal.aborted).toBe(false)

    expect((await d.tasks.list({ direction: 'outgoing' })).map(t => t.id)).toEqual([task.id])
    expect(await d.tasks.list({ direction: 'incoming' })).toEqual([])
    expect((await w.tasks.list({ direction: 'incoming', status: 'completed' })).map(t => t.id)).toEqual([task.id])
    // the task messages were consumed: nothing task-related is left unread on either side
    await waitFor(async () => (await d.inbox.read({ unreadOnly: true, kind: ['task.status', 'task.result'] })).entries.length === 0, 'status and result acked on the delegator')
    await waitFor(async () => (await w.inbox.read({ unreadOnly: true, kind: 'task.delegate' })).entries.length === 0, 'the delegation acked on the worker')
  })

  it('delegate({capability}) picks a peer whose verified card offers it, never one that only has a handler', async () => {
    const d = await mesh.node({ name: 'delegator' })
    const w = await mesh.node({ name: 'summarizer', card: { capabilities: [{ name: 'summarize', tags: ['en'] }] } })
    const x = await mesh.node({ name: 'translator', card: { capabilities: ['translate'] } })
    const ran: string[] = []
    w.tasks.handle('summarize', () => { ran.push('w'); return 'from w' })
    // x could run it but does not say so in its card: not a candidate
    x.tasks.handle('summarize', () => { ran.push('x'); return 'from x' })
    await link(d, w)
    await link(d, x)
    await offering(d, 'summarize', [w])

    for (let i = 0; i < 3; i++) {
      const task = await d.delegate({ capability: 'summarize' }, { i })
      expect(task.peer).toBe(w.peerId)
      expect(task.candidates).toEqual([])
      expect(await d.tasks.result(task.id, { timeout: 30_000 })).toBe('from w')
    }
    expect(ran).toEqual(['w', 'w', 'w'])

    const none = await d.delegate({ capability: 'nobody_offers_this' }, null).catch(e => e)
    expect(none.name).toBe('NotFoundError')
    const self = await w.delegate(w.peerId, null, { capability: 'summarize' }).catch(e => e)
    expect(self.name).toBe('InvalidArgumentError')
    const past = await d.delegate(w.peerId, null, { capability: 'summarize', deadline: Date.now() - 1 }).catch(e => e)
    expect(past.name).toBe('InvalidArgumentError')
  })

  it('a worker offline when the task is sent gets it when it comes back and completes it', async () => {
    const d = await mesh.node({ name: 'delegator' })
    const w = await mesh.node({ name: 'worker', card: { capabilities: ['summarize'] } })
    let runs = 0
    w.tasks.handle('summarize', (input: string) => { runs++; return input.toUpperCase() })
    await link(d, w)
    await offering(d, 'summarize', [w])
    await w.stop()

    const task = await d.delegate({ capability: 'summarize' }, 'offline first')
    expect(task.peer).toBe(w.peerId)
    expect(task.status).toBe('submitted')
    const queued = await d.outbox.list({ to: w.peerId, status: 'queued' })
    expect(queued.entries.length).toBeGreaterThanOrEqual(1)
    expect(runs).toBe(0)

    await w.start()
    await w.dial(d.multiaddrs[0]!)
    expect(await d.tasks.result(task.id, { timeout: 45_000 })).toBe('OFFLINE FIRST')
    expect(runs).toBe(1)
    expect((await d.outbox.list({ to: w.peerId, status: 'queued' })).entries).toEqual([])
  })

  it('a result for a delegator that went away waits on the worker and arrives when it is back', async () => {
    const d = await mesh.node({ name: 'delegator' })
    const w = await mesh.node({ name: 'worker', card: { capabilities: ['summarize'] } })
    const release = gate()
    let started = false
    w.tasks.handle('summarize', async () => { started = true; await release.promise; return 'late result' })
    await link(d, w)
    const task = await d.delegate(w.peerId, null, { capability: 'summarize' })
    await waitFor(() => started, 'the handler to start')
    await d.stop()
    release.resolve()
    await ended(w, task.id, 'the worker to finish')
    expect((await w.outbox.list({ to: d.peerId, status: 'queued' })).entries.length).toBeGreaterThanOrEqual(1)

    await d.start()
    await d.dial(w.multiaddrs[0]!)
    expect(await d.tasks.result(task.id, { timeout: 45_000 })).toBe('late result')
  })

  it('a delegation with the same task id delivered twice runs once (the id is the idempotency key)', async () => {
    const d = await mesh.node({ name: 'delegator' })
    const w = await mesh.node({ name: 'worker', card: { capabilities: ['count'] } })
    let runs = 0
    w.tasks.handle('count', () => ++runs)
    await link(d, w)
    const body = { taskId: newId(), capability: 'count', input: null, deadline: Date.now() + 60_000, path: [d.peerId] }
    const trace = newTrace()
    // as a re-delivery after a crash would: two envelopes, one delegation
    const first = await d.send(w.peerId, body, { kind: 'task.delegate', trace, hop: 0 } as never)
    const second = await d.send(w.peerId, body, { kind: 'task.delegate', trace, hop: 0 } as never)
    await waitFor(async () => (await d.outbox.get(first.id))?.status === 'delivered' && (await d.outbox.get(second.id))?.status === 'delivered', 'both delivered')
    await ended(w, body.taskId, 'the worker to run it')
    expect(runs).toBe(1)
    expect((await w.tasks.list({ direction: 'incoming' })).filter(t => t.id === body.taskId)).toHaveLength(1)
  })

  it('delegating to a named peer without the capability ends rejected (incapable) with a TaskFailedError', async () => {
    const d = await mesh.node({ name: 'delegator' })
    const w = await mesh.node({ name: 'worker', card: { capabilities: ['summarize'] } })
    w.tasks.handle('summarize', () => 'ok')
    await link(d, w)
    const task = await d.delegate('worker', { x: 1 }, { capability: 'translate' })
    expect(task.peer).toBe(w.peerId)
    const err = await d.tasks.result(task.id, { timeout: 30_000 }).catch(e => e)
    expect(err.name).toBe('TaskFailedError')
    expect(err).toMatchObject({ taskId: task.id, status: 'rejected', reason: 'incapable' })
    expect(await d.tasks.get(task.id)).toMatchObject({ status: 'rejected', error: { reason: 'incapable' } })
    expect(await w.tasks.get(task.id)).toMatchObject({ direction: 'incoming', status: 'rejected', error: { reason: 'incapable' } })
    // the peer offers one capability: the name alone is enough for delegate
    expect(await d.tasks.result((await d.delegate('worker', 'by name')).id, { timeout: 30_000 })).toBe('ok')
  })

  it('a stale card: the chosen worker no longer offers the capability → NACK incapable → falls over to the next candidate', async () => {
    // The realistic way to reach a peer without the capability through delegate({capability}):
    // the delegator's cached card is older than the worker's change. Here w1 restarts with a card
    // that dropped the capability while the delegator cannot see it; w2 is away too. Both are
    // offline to the delegator, which already has a task waiting for w2, so w1 ranks first
    // (fewer of our tasks there).
    const d = await mesh.node({ name: 'delegator', offlineAfter: 300 })
    const w1Home = await mesh.home()
    const w1 = await mesh.node({ name: 'w1', home: w1Home, card: { capabilities: ['summarize'] } })
    const w2 = await mesh.node({ name: 'w2', card: { capabilities: ['summarize'] } })
    const ranOn: string[] = []
    w2.tasks.handle('summarize', (input: JsonValue) => { ranOn.push(JSON.stringify(input)); return 'done by w2' })
    await link(d, w1)
    await link(d, w2)
    await offering(d, 'summarize', [w1, w2])
    await w1.stop()
    await w2.stop()
    await waitFor(async () => (await d.peers({ onlineOnly: true })).length === 0, 'both workers offline to the delegator')
    // same key, fresh data dir: w1 restarts without the cached cards it would redial the delegator from
    const { privateKey } = await loadOrCreateIdentity(join(w1Home, 'w1'))
    const w1again = await mesh.node({ name: 'w1', privateKey, card: { capabilities: ['translate'] } })
    expect(w1again.peerId).toBe(w1.peerId)

    await offering(d, 'summarize', [w1, w2])
    const earlier = await d.delegate('w2', { n: 0 }, { capability: 'summarize' })
    const task = await d.delegate({ capability: 'summarize' }, { n: 1 })
    expect(task.peer).toBe(w1.peerId)
    expect(task.candidates).toEqual([w2.peerId])

    await w1again.dial(d.multiaddrs[0]!)
    await waitFor(async () => (await d.tasks.get(task.id))?.peer === w2.peerId, 'fall-over to w2')
    expect(await w1again.tasks.get(task.id)).toMatchObject({ status: 'rejected', error: { reason: 'incapable' } })
    await w2.start()
    await w2.dial(d.multiaddrs[0]!)
    expect(await d.tasks.result(task.id, { timeout: 45_000 })).toBe('done by w2')
    expect(await d.tasks.result(earlier.id, { timeout: 45_000 })).toBe('done by w2')
    const info = (await d.tasks.get(task.id))!
    expect(info).toMatchObject({ status: 'completed', peer: w2.peerId, attempts: 2, candidates: [] })
    expect(info.history.some(h => h.message?.includes('refused (incapable)'))).toBe(true)
    expect(ranOn.sort()).toEqual(['{"n":0}', '{"n":1}'])
  })

  // Regression (fixed): a verified card's addrs never reach libp2p's peer store. A delegator restarted as a new
  // process holds the worker's card (from its store) but dials it by PeerId with no addresses
  // (delivery and the peer table's redial), so the task waits until the worker dials in; an
  // explicit dial(multiaddr) meanwhile joins the stuck dial and times out. Fix in DefaultMeshNode's
  // cardService 'card' listener: `void libp2p.peerStore.merge(peerIdFromString(card.peerId),
  // { multiaddrs: card.addrs.map(a => multiaddr(a)) }).catch(() => {})`.
  it('a delegator restarted from its store reaches a worker it knows only from the cached card', async () => {
    const dHome = await mesh.home()
    const first = await mesh.node({ name: 'delegator', home: dHome })
    const w = await mesh.node({ name: 'worker', card: { capabilities: ['summarize'] } })
    w.tasks.handle('summarize', () => 'reached')
    await link(first, w)
    await first.stop()
    const d = await mesh.node({ name: 'delegator', home: dHome })
    await offering(d, 'summarize', [w])
    const task = await d.delegate({ capability: 'summarize' }, null)
    expect(await d.tasks.result(task.id, { timeout: 30_000 })).toBe('reached')
  })

  // Sequential tasks over one connection: each is several delivery flushes in both directions.
  // (Under load a cancel race on one connection once left eight half-open inbound delivery
  // streams and stalled that direction; see the report. This keeps the plain sequence covered.)
  it('ten tasks in a row between one pair over one connection all complete', async () => {
    const d = await mesh.node({ name: 'delegator' })
    const w = await mesh.node({ name: 'worker', card: { capabilities: ['inc'] } })
    w.tasks.handle('inc', (n: number) => n + 1)
    await link(d, w)
    for (let i = 0; i < 10; i++) {
      const task = await d.delegate(w.peerId, i, { capability: 'inc' })
      expect(await d.tasks.result(task.id, { timeout: 15_000 })).toBe(i + 1)
    }
    expect(d.libp2p.getConnections(w.libp2p.peerId)).toHaveLength(1)
  })

  it('an overloaded worker (maxConcurrent 1, busy) refuses → the delegator falls over to the next candidate', async () => {
    const d = await mesh.node({ name: 'delegator' })
    const e = await mesh.node({ name: 'other-delegator' })
    const w1 = await mesh.node({ name: 'w1', card: { capabilities: ['work'] } })
    const w2 = await mesh.node({ name: 'w2', card: { capabilities: ['work', 'hold'] } })
    const busy = gate()
    const hold = gate()
    const ran: string[] = []
    w1.tasks.handle('work', async (input: string) => { ran.push(`w1:${input}`); await busy.promise; return 'w1' }, { maxConcurrent: 1 })
    w2.tasks.handle('work', (input: string) => { ran.push(`w2:${input}`); return 'w2' })
    w2.tasks.handle('hold', async () => { await hold.promise; return 'held' })
    await link(d, w1)
    await link(d, w2)
    await link(e, w1)
    await offering(d, 'work', [w1, w2])
    await waitFor(async () => (await d.peers({ onlineOnly: true })).filter(p => p.peerId === w1.peerId || p.peerId === w2.peerId).length === 2, 'both workers online')

    // w1 is busy with someone else's task; d has one task running on w2, so w1 looks lighter
    const other = await e.delegate(w1.peerId, 'from e', { capability: 'work' })
    await waitFor(async () => (await w1.tasks.get(other.id))?.status === 'working', 'w1 busy')
    const held = await d.delegate(w2.peerId, null, { capability: 'hold' })
    await waitFor(async () => (await d.tasks.get(held.id))?.status === 'working', 'hold running on w2')

    const task = await d.delegate({ capability: 'work' }, 'from d')
    expect(task.peer).toBe(w1.peerId)
    expect(task.candidates).toEqual([w2.peerId])
    expect(await d.tasks.result(task.id, { timeout: 30_000 })).toBe('w2')
    const info = (await d.tasks.get(task.id))!
    expect(info).toMatchObject({ peer: w2.peerId, attempts: 2 })
    expect(info.history.some(h => h.message?.includes('refused (overloaded)'))).toBe(true)
    expect(await w1.tasks.get(task.id)).toMatchObject({ status: 'rejected', error: { reason: 'overloaded' } })
    expect(ran).toEqual(['w1:from e', 'w2:from d'])
    busy.resolve()
    hold.resolve()
    expect(await e.tasks.result(other.id, { timeout: 30_000 })).toBe('w1')
  })

  // Regression (fixed): a retry after `overloaded` re-sends the same taskId to the same worker, which already
  // holds a (rejected) record for it and drops the delegation as a duplicate: the task sits
  // `submitted` until its deadline and ends `expired`. Fix in TaskService.onDelegate: treat an
  // existing record that ended `rejected` with reason `overloaded` as absent (re-evaluate).
  it('the only candidate is overloaded → the delegator backs off and retries, and the task completes once it is free', async () => {
    const d = await mesh.node({ name: 'delegator' })
    const w = await mesh.node({ name: 'worker', card: { capabilities: ['work'] } })
    const busy = gate()
    let runs = 0
    w.tasks.handle('work', async (input: string) => { runs++; if (input === 'first') await busy.promise; return `done ${input}` }, { maxConcurrent: 1 })
    await link(d, w)
    const firstTask = await d.delegate(w.peerId, 'first', { capability: 'work' })
    await waitFor(async () => (await w.tasks.get(firstTask.id))?.status === 'working', 'worker busy')
    const second = await d.delegate({ capability: 'work' }, 'second', { timeout: 15_000 })
    await waitFor(async () => (await d.tasks.get(second.id))?.history.some(h => h.message?.startsWith('overloaded: retrying')), 'an overloaded refusal and a scheduled retry')
    expect((await d.tasks.get(second.id))!.status).toBe('submitted')
    busy.resolve()
    expect(await d.tasks.result(firstTask.id, { timeout: 30_000 })).toBe('done first')
    expect(await d.tasks.result(second.id, { timeout: 30_000 })).toBe('done second')
    expect(runs).toBe(2)
  })

  it('a flood of tasks from one peer gets overloaded refusals while an honest peer is still served', async () => {
    const w = await mesh.node({ name: 'worker', card: { capabilities: ['echo'] }, policy: { rateLimits: { tasks: { rate: 0.2, burst: 3 } } } })
    const flooder = await mesh.node({ name: 'flooder' })
    const honest = await mesh.node({ name: 'honest' })
    const ranFor: string[] = []
    w.tasks.handle('echo', (input: JsonValue, ctx) => { ranFor.push(ctx.from); return input }, { maxConcurrent: 100 })
    await link(flooder, w)
    await link(honest, w)
    const flood = await Promise.all(Array.from({ length: 30 }, async (_, i) => flooder.delegate(w.peerId, i, { capability: 'echo' })))
    await waitFor(async () => {
      const mine = await w.tasks.list({ direction: 'incoming', limit: 1000 })
      return flood.every(t => mine.some(m => m.id === t.id))
    }, 'the worker to see every flooded task')
    const incoming = await w.tasks.list({ direction: 'incoming', limit: 1000 })
    const refused = incoming.filter(t => t.status === 'rejected' && t.error?.reason === 'overloaded')
    expect(refused.length).toBeGreaterThanOrEqual(20)
    // the flooder was told, and honours it with backoff
    await waitFor(async () => {
      const views = await Promise.all(flood.map(async t => flooder.tasks.get(t.id)))
      return views.filter(v => v?.history.some(h => h.message?.startsWith('overloaded'))).length >= 20
    }, 'the flooder to see overloaded refusals')

    const fair = await honest.delegate(w.peerId, 'honest', { capability: 'echo' })
    expect(await honest.tasks.result(fair.id, { timeout: 30_000 })).toBe('honest')
    expect(ranFor).toContain(honest.peerId)
    expect(ranFor.filter(p => p === flooder.peerId).length).toBeLessThanOrEqual(10)
    // the worker keeps answering requests too
    expect(await honest.request(w.peerId, 'mesh.echo', 'still here')).toBe('still here')
  })

  it('a loop A→B→C→A is stopped (LoopDetectedError on the hop that would close it); every task ends, none runs forever', async () => {
    const a = await mesh.node({ name: 'a', card: { capabilities: ['ring_a'] } })
    const b = await mesh.node({ name: 'b', card: { capabilities: ['ring_b'] } })
    const c = await mesh.node({ name: 'c', card: { capabilities: ['ring_c'] } })
    const runs = { a: 0, b: 0, c: 0 }
    const errors: Error[] = []
    const onward = (name: 'a' | 'b' | 'c', next: string) => async (input: JsonValue, ctx: TaskContext): Promise<JsonValue> => {
      runs[name]++
      try {
        const child = await ctx.delegate({ capability: next }, input, { timeout: 30_000 })
        return await ctx.result(child.id)
      } catch (err) {
        errors.push(err as Error)
        throw err
      }
    }
    a.tasks.handle('ring_a', onward('a', 'ring_b'))
    b.tasks.handle('ring_b', onward('b', 'ring_c'))
    c.tasks.handle('ring_c', onward('c', 'ring_a'))
    await link(a, b)
    await link(b, c)
    await link(c, a)
    await offering(b, 'ring_c', [c])
    await offering(c, 'ring_a', [a])

    const root = await a.delegate({ capability: 'ring_b' }, 'go round', { timeout: 30_000 })
    const end = await ended(a, root.id, 'the root task to end')
    expect(end.status).toBe('failed')
    expect(end.error?.message).toContain('already on this delegation chain')
    expect(runs).toEqual({ a: 0, b: 1, c: 1 })
    expect(errors.map(e => e.name)).toEqual(['LoopDetectedError', 'TaskFailedError'])
    // nothing left running or pending anywhere
    for (const node of [a, b, c]) {
      const open = (await node.tasks.list({ limit: 100 })).filter(t => !terminal(t.status))
      expect(open).toEqual([])
    }
  })

  // Regression (fixed): a handler that fails because ctx.delegate() refused the loop (LoopDetectedError) ends
  // `failed` with no reason: run() only keeps the reason of a NackError. Fix in TaskService.run():
  // map `err instanceof LoopDetectedError` to `{ status: 'failed', error: { reason: 'loop_detected', message } }`
  // (or make LoopDetectedError a NackError('loop_detected')).
  it('the task that would close a loop ends failed with reason loop_detected', async () => {
    const a = await mesh.node({ name: 'a', card: { capabilities: ['ring_a'] } })
    const b = await mesh.node({ name: 'b', card: { capabilities: ['ring_b'] } })
    a.tasks.handle('ring_a', () => 'never')
    b.tasks.handle('ring_b', async (input: JsonValue, ctx) => ctx.result((await ctx.delegate({ capability: 'ring_a' }, input)).id))
    await link(a, b)
    await offering(b, 'ring_a', [a])
    const root = await a.delegate({ capability: 'ring_b' }, 'back to a')
    await ended(a, root.id, 'the root task to end')
    expect((await b.tasks.get(root.id))?.error?.reason).toBe('loop_detected')
  })

  it('a receiver refuses loop_detected: a delegation deeper than its maxHops, or whose path already holds it', async () => {
    const a = await mesh.node({ name: 'a' })
    const b = await mesh.node({ name: 'b', card: { capabilities: ['hop1'] } })
    const c = await mesh.node({ name: 'c', card: { capabilities: ['hop2'] } })
    const d = await mesh.node({ name: 'd', card: { capabilities: ['hop3'] }, maxHops: 1 })
    let dRuns = 0
    const hops: number[] = []
    const forward = (next: string) => async (input: JsonValue, ctx: TaskContext): Promise<JsonValue> => ctx.result((await ctx.delegate({ capability: next }, input)).id)
    b.tasks.handle('hop1', forward('hop2'))
    c.tasks.handle('hop2', forward('hop3'))
    d.tasks.handle('hop3', () => { dRuns++; return 'too deep' })
    for (const [x, y] of [[a, b], [b, c], [c, d]] as const) await link(x, y)
    await offering(b, 'hop2', [c])
    await offering(c, 'hop3', [d])

    const root = await a.delegate({ capability: 'hop1' }, 'deep')
    const end = await ended(a, root.id, 'the root task to end')
    expect(end.status).toBe('failed')
    expect(dRuns).toBe(0)
    const atD = (await d.tasks.list({ direction: 'incoming' }))[0]!
    expect(atD).toMatchObject({ status: 'rejected', hop: 2, error: { reason: 'loop_detected', message: 'more than 1 hops' } })
    expect(atD.path).toEqual([a.peerId, b.peerId, c.peerId])
    const atC = (await c.tasks.list({ direction: 'outgoing' }))[0]!
    expect(atC).toMatchObject({ status: 'rejected', error: { reason: 'loop_detected' } })
    for (const t of await b.tasks.list()) hops.push(t.hop)
    expect(hops.sort()).toEqual([0, 1])

    // a (buggy or hostile) delegator that puts the worker on the path itself
    const body = { taskId: newId(), capability: 'hop2', input: null, deadline: Date.now() + 60_000, path: [a.peerId, c.peerId] }
    await a.dial(c.multiaddrs[0]!)
    await a.send(c.peerId, body, { kind: 'task.delegate', trace: newTrace(), hop: 1 } as never)
    const refused = await ended(c, body.taskId, 'c to refuse the looping delegation')
    expect(refused).toMatchObject({ status: 'rejected', error: { reason: 'loop_detected', message: 'this peer is already on the delegation chain' } })
  })

  it('cancel of a running task: canceled on both sides and the handler\'s signal is aborted', async () => {
    const d = await mesh.node({ name: 'delegator' })
    const w = await mesh.node({ name: 'worker', card: { capabilities: ['slow'] } })
    let signal: AbortSignal | undefined
    let handlerSettled = false
    const never = gate()
    w.tasks.handle('slow', async (_input, ctx) => {
      signal = ctx.signal
      await Promise.race([never.promise, new Promise(resolve => { ctx.signal.addEventListener('abort', resolve, { once: true }) })])
      handlerSettled = true
      return 'should not count'
    })
    await link(d, w)
    const seen = updates(d)
    const task = await d.delegate(w.peerId, null, { capability: 'slow' })
    await waitFor(async () => (await d.tasks.get(task.id))?.status === 'working', 'working on the delegator')
    const afterCancel = await d.tasks.cancel(task.id)
    expect(afterCancel.status).toBe('working')
    expect(afterCancel.message).toBe('cancel requested')

    const mine = await ended(d, task.id, 'the delegator to see the end')
    expect(mine.status).toBe('canceled')
    expect((await ended(w, task.id, 'the worker to end it')).status).toBe('canceled')
    await waitFor(() => signal?.aborted === true && handlerSettled, 'the handler signal to abort')
    const err = await d.tasks.result(task.id).catch(e => e)
    expect(err).toMatchObject({ name: 'TaskFailedError', status: 'canceled' })
    // the event follows the stored state by a turn or so
    await waitFor(() => seen.some(e => e.id === task.id && terminal(e.status)), 'the terminal task:update')
    expect(seen.filter(e => e.id === task.id && terminal(e.status)).map(e => e.status)).toEqual(['canceled'])
    // canceling again is a no-op on an ended task
    expect((await d.tasks.cancel(task.id)).status).toBe('canceled')
  })

  it('cancel before delivery (worker offline): canceled at once, the queued delegation fails, the worker never runs it', async () => {
    const d = await mesh.node({ name: 'delegator' })
    const w = await mesh.node({ name: 'worker', card: { capabilities: ['slow'] } })
    let runs = 0
    w.tasks.handle('slow', () => { runs++; return 'ran' })
    await link(d, w)
    await w.stop()
    const task = await d.delegate(w.peerId, null, { capability: 'slow' })
    const canceled = await d.tasks.cancel(task.id)
    expect(canceled.status).toBe('canceled')
    const delegation = (await d.outbox.list({ to: w.peerId })).entries.at(-1)!
    expect(delegation).toMatchObject({ status: 'failed' })
    await w.start()
    await w.dial(d.multiaddrs[0]!)
    // bounded check that nothing arrives late: a fresh message after it is delivered and the task never showed up
    const probe = await d.send(w.peerId, 'probe')
    await waitFor(async () => (await d.outbox.get(probe.id))?.status === 'delivered', 'probe delivered')
    expect(await w.tasks.get(task.id)).toBeUndefined()
    expect(runs).toBe(0)
  })

  it('cancel racing completion: each side reaches exactly one terminal state, and the delegator ends as the worker decided', async () => {
    // The worker is authoritative for a delivered task: whatever it decided (completed if the
    // handler won, canceled if the cancel won) is what the delegator ends with; neither side
    // ever records a second terminal state. A fresh worker per round keeps each pair to a few
    // delivery flushes (see the note on delivery streams below).
    const d = await mesh.node({ name: 'delegator' })
    const dSeen = updates(d)
    const outcomes: string[] = []
    for (let round = 0; round < 9; round++) {
      const w = await mesh.node({ name: `worker${round}`, card: { capabilities: ['race'] } })
      const wSeen = updates(w)
      const gates = new Map<string, PromiseWithResolvers<void>>()
      w.tasks.handle('race', async (_input, ctx) => {
        const g = gates.get(ctx.taskId) ?? gate()
        gates.set(ctx.taskId, g)
        await g.promise
        return 'finished'
      })
      await link(d, w)
      const task = await d.delegate(w.peerId, round, { capability: 'race' })
      await waitFor(async () => (await d.tasks.get(task.id))?.status === 'working' && gates.has(task.id), `round ${round} working`)
      const g = gates.get(task.id)!
      if (round % 3 === 0) {
        // the handler finishes first, the cancel follows at once
        g.resolve()
        await d.tasks.cancel(task.id)
      } else if (round % 3 === 1) {
        // the cancel starts first, the handler finishes in the same turn
        const canceling = d.tasks.cancel(task.id)
        g.resolve()
        await canceling
      } else {
        // the handler finishes the moment the cancel message lands on the worker
        await d.tasks.cancel(task.id)
        await waitFor(async () => (await w.inbox.read({ kind: 'task.cancel' })).entries.length > 0, `round ${round}: cancel landed`)
        g.resolve()
      }
      const mine = await ended(d, task.id, `round ${round}: delegator end`)
      const theirs = await ended(w, task.id, `round ${round}: worker end`)
      expect(['completed', 'canceled']).toContain(theirs.status)
      expect(mine.status).toBe(theirs.status)
      if (mine.status === 'completed') expect(mine.result).toBe('finished')
      for (const info of [mine, theirs]) expect(info.history.filter(h => terminal(h.status))).toHaveLength(1)
      // the events follow the stored state by a turn or so
      await waitFor(() => dSeen.some(e => e.id === task.id && terminal(e.status)) && wSeen.some(e => e.id === task.id && terminal(e.status)), `round ${round}: terminal events`)
      expect(new Set(dSeen.filter(e => e.id === task.id && terminal(e.status)).map(e => e.status))).toEqual(new Set([mine.status]))
      expect(new Set(wSeen.filter(e => e.id === task.id && terminal(e.status)).map(e => e.status))).toEqual(new Set([theirs.status]))
      outcomes.push(mine.status)
    }
    expect(outcomes).toHaveLength(9)
  })

  it('a worker stopped mid-task resumes it on restart (same node, handler registered) and completes', async () => {
    const d = await mesh.node({ name: 'delegator' })
    const w = await mesh.node({ name: 'worker', card: { capabilities: ['job'] } })
    const firstRun = gate()
    let runs = 0
    w.tasks.handle('job', async (input: string) => {
      runs++
      if (runs === 1) await firstRun.promise
      return `${input} #${runs}`
    })
    await link(d, w)
    const task = await d.delegate(w.peerId, 'resumed', { capability: 'job', timeout: 60_000 })
    await waitFor(async () => (await d.tasks.get(task.id))?.status === 'working', 'working')
    await w.stop()
    await w.start()
    await w.dial(d.multiaddrs[0]!)
    expect(await d.tasks.result(task.id, { timeout: 45_000 })).toBe('resumed #2')
    expect(runs).toBe(2)
  })

  it('a worker restarted as a new node that registers handlers only after start ends the interrupted task failed, on both sides', async () => {
    const d = await mesh.node({ name: 'delegator' })
    const wHome = await mesh.home()
    const w = await mesh.node({ name: 'worker', home: wHome, card: { capabilities: ['job'] } })
    const hang = gate()
    w.tasks.handle('job', async () => { await hang.promise; return 'never' })
    await link(d, w)
    const task = await d.delegate(w.peerId, null, { capability: 'job', timeout: 60_000 })
    await waitFor(async () => (await d.tasks.get(task.id))?.status === 'working', 'working')
    await w.stop()
    const again = await mesh.node({ name: 'worker', home: wHome, card: { capabilities: ['job'] } })
    again.tasks.handle('job', () => 'too late')
    await again.dial(d.multiaddrs[0]!)
    const mine = await ended(d, task.id, 'the delegator to see the end', 45_000)
    expect(mine.status).toBe('failed')
    expect(mine.error?.message).toContain('restarted')
    expect((await again.tasks.get(task.id))?.status).toBe('failed')
  })

  it('a worker restarted with start:false registers its handler first and resumes the task', async () => {
    const d = await mesh.node({ name: 'delegator' })
    const wHome = await mesh.home()
    const w = await mesh.node({ name: 'worker', home: wHome, card: { capabilities: ['job'] } })
    const hang = gate()
    w.tasks.handle('job', async () => { await hang.promise; return 'never' })
    await link(d, w)
    const task = await d.delegate(w.peerId, 'x', { capability: 'job', timeout: 60_000 })
    await waitFor(async () => (await d.tasks.get(task.id))?.status === 'working', 'working')
    await w.stop()
    const again = await mesh.node({ name: 'worker', home: wHome, card: { capabilities: ['job'] }, start: false })
    again.tasks.handle('job', (input: string) => `${input} resumed`)
    await again.start()
    await again.dial(d.multiaddrs[0]!)
    expect(await d.tasks.result(task.id, { timeout: 45_000 })).toBe('x resumed')
  })

  it('a worker killed mid-task that never comes back: the delegator ends the task expired at its deadline', async () => {
    const d = await mesh.node({ name: 'delegator' })
    const w = await mesh.node({ name: 'worker', card: { capabilities: ['job'] } })
    const hang = gate()
    w.tasks.handle('job', async () => { await hang.promise; return 'never' })
    await link(d, w)
    const task = await d.delegate(w.peerId, null, { capability: 'job', timeout: 5000 })
    await waitFor(async () => (await d.tasks.get(task.id))?.status === 'working', 'working')
    await w.stop()
    const mine = await ended(d, task.id, 'expiry at the deadline', 30_000)
    expect(mine).toMatchObject({ status: 'expired', error: { reason: 'timeout' } })
    expect(mine.updatedAt).toBeGreaterThanOrEqual(task.deadline)
  })

  it('the deadline passes while the handler runs: the handler is aborted and the task fails (timeout) on both sides', async () => {
    const d = await mesh.node({ name: 'delegator' })
    const w = await mesh.node({ name: 'worker', card: { capabilities: ['job'] } })
    let aborted = false
    const never = gate()
    w.tasks.handle('job', async (_input, ctx) => {
      ctx.signal.addEventListener('abort', () => { aborted = true })
      await never.promise
      return 'never'
    })
    await link(d, w)
    const task = await d.delegate(w.peerId, null, { capability: 'job', timeout: 3000 })
    const theirs = await ended(w, task.id, 'the worker to give up', 30_000)
    expect(theirs).toMatchObject({ status: 'failed', error: { reason: 'timeout' } })
    expect(aborted).toBe(true)
    const mine = await ended(d, task.id, 'the delegator to end it', 30_000)
    expect(['failed', 'expired']).toContain(mine.status)
  })

  it('agent as worker: an advertised capability without a handler lands in the inbox; tasks.update drives the delegator', async () => {
    const d = await mesh.node({ name: 'delegator' })
    const agent = await mesh.node({ name: 'agent', card: { capabilities: ['review'] } })
    await link(d, agent)
    await offering(d, 'review', [agent])
    const seen = updates(d)
    const task = await d.delegate({ capability: 'review' }, { pr: 42 })
    expect(task.peer).toBe(agent.peerId)

    const pending = await waitFor(async () => (await agent.tasks.list({ direction: 'incoming' })).find(t => t.id === task.id), 'the pending task on the agent')
    expect(pending).toMatchObject({ status: 'submitted', mode: 'agent', peer: d.peerId, capability: 'review', input: { pr: 42 } })
    const inbox = await agent.inbox.read({ kind: 'task.delegate', unreadOnly: true })
    expect(inbox.entries.map(e => (e.body as { taskId: string }).taskId)).toEqual([task.id])
    expect(inbox.entries[0]).toMatchObject({ from: d.peerId, kind: 'task.delegate' })
    expect((await d.tasks.get(task.id))!.status).toBe('submitted')

    expect((await agent.tasks.update(task.id, { status: 'accepted' })).status).toBe('accepted')
    await waitFor(() => seen.some(e => e.id === task.id && e.status === 'accepted'), 'accepted on the delegator')
    // the agent took it: the delegation is no longer unread
    expect((await agent.inbox.read({ kind: 'task.delegate', unreadOnly: true })).entries).toEqual([])
    await agent.tasks.update(task.id, { status: 'working', progress: 40, message: 'reading the diff' })
    await waitFor(() => seen.some(e => e.id === task.id && e.status === 'working' && e.progress === 40 && e.message === 'reading the diff'), 'progress 40 on the delegator')
    const done = await agent.tasks.update(task.id, { status: 'completed', result: { approve: true } })
    expect(done.status).toBe('completed')
    expect(await d.tasks.result(task.id, { timeout: 30_000 })).toEqual({ approve: true })
    await waitFor(() => seen.some(e => e.id === task.id && e.status === 'completed'), 'the completed task:update')
    expect(statusPath(seen, task.id)).toEqual(['submitted', 'accepted', 'working', 'completed'])

    const late = await agent.tasks.update(task.id, { status: 'working' }).catch(e => e)
    expect(late.name).toBe('InvalidArgumentError')
    const unknown = await agent.tasks.update(newId(), { status: 'accepted' }).catch(e => e)
    expect(unknown.name).toBe('NotFoundError')
  })

  it('agent as worker: rejecting and failing reach the delegator; a handler-run task refuses tasks.update', async () => {
    const d = await mesh.node({ name: 'delegator' })
    const agent = await mesh.node({ name: 'agent', card: { capabilities: ['review', 'auto'] } })
    const hang = gate()
    agent.tasks.handle('auto', async () => { await hang.promise; return 'x' })
    await link(d, agent)
    const declined = await d.delegate(agent.peerId, 1, { capability: 'review' })
    const failed = await d.delegate(agent.peerId, 2, { capability: 'review' })
    const coded = await d.delegate(agent.peerId, 3, { capability: 'auto' })
    await waitFor(async () => (await agent.tasks.list({ direction: 'incoming' })).length === 3, 'three incoming tasks')
    await agent.tasks.update(declined.id, { status: 'rejected', message: 'not my area' })
    await agent.tasks.update(failed.id, { status: 'working', progress: 10 })
    await agent.tasks.update(failed.id, { status: 'failed', message: 'could not build it' })
    expect(await ended(d, declined.id, 'rejected on the delegator')).toMatchObject({ status: 'rejected', error: { reason: 'incapable', message: 'not my area' } })
    expect(await ended(d, failed.id, 'failed on the delegator')).toMatchObject({ status: 'failed', error: { message: 'could not build it' } })
    const refused = await agent.tasks.update(coded.id, { status: 'completed', result: 1 }).catch(e => e)
    expect(refused.name).toBe('InvalidArgumentError')
  })

  // Regression (fixed): on restart, recover() replays unread task.delegate entries through onDelegate, which
  // finds the task record and acks the entry as a duplicate: the agent's pending task vanishes
  // from the unread inbox (it is still listed by tasks.list). Fix in TaskService.onDelegate: when
  // the existing record is `mode: 'agent'` and not terminal, return without acking.
  it('agent as worker: a pending task survives a restart, still unread in the inbox', async () => {
    const d = await mesh.node({ name: 'delegator' })
    const agent = await mesh.node({ name: 'agent', card: { capabilities: ['review'] } })
    await link(d, agent)
    const task = await d.delegate(agent.peerId, { pr: 7 }, { capability: 'review' })
    await waitFor(async () => (await agent.tasks.get(task.id))?.status === 'submitted', 'pending on the agent')
    await agent.stop()
    await agent.start()
    expect((await agent.tasks.get(task.id))?.status).toBe('submitted')
    const unread = await agent.inbox.read({ kind: 'task.delegate', unreadOnly: true })
    expect(unread.entries.map(e => (e.body as { taskId: string }).taskId)).toEqual([task.id])
  })

  it('trace across three peers: trace(id) nests the sub-task, every task shares the trace id, audit lists this node\'s events', async () => {
    const a = await mesh.node({ name: 'coordinator' })
    const b = await mesh.node({ name: 'lead', card: { capabilities: ['plan'] } })
    const c = await mesh.node({ name: 'analyst', card: { capabilities: ['analyze'] } })
    b.tasks.handle('plan', async (input: string, ctx) => {
      ctx.progress(10, 'delegating')
      const child = await ctx.delegate({ capability: 'analyze' }, `${input}/analyzed`)
      return { plan: await ctx.result(child.id) }
    })
    c.tasks.handle('analyze', (input: string) => input.toUpperCase())
    await link(a, b)
    await link(b, c)
    await offering(b, 'analyze', [c])

    const root = await a.delegate(b.peerId, 'repo', { capability: 'plan' })
    expect(await a.tasks.result(root.id, { timeout: 30_000 })).toEqual({ plan: 'REPO/ANALYZED' })
    const id = traceId(root.trace)

    const report = await a.trace(root.id)
    expect(report.traceId).toBe(id)
    expect(report.tasks).toHaveLength(1)
    const top = report.tasks[0]!
    expect(top).toMatchObject({ taskId: root.id, peer: b.peerId, capability: 'plan', status: 'completed' })
    expect(top.children).toHaveLength(1)
    const sub: TaskTree = top.children[0]!
    expect(sub).toMatchObject({ peer: c.peerId, capability: 'analyze', status: 'completed', children: [] })

    // the lead's own view: its incoming task with the sub-task it delegated
    const leadView = await b.trace(root.id)
    expect(leadView.tasks[0]).toMatchObject({ taskId: root.id, peer: a.peerId, children: [{ taskId: sub.taskId, peer: c.peerId, status: 'completed' }] })
    // the analyst got the same trace id, one hop further, with the path so far
    const atC = (await c.tasks.get(sub.taskId))!
    expect(traceId(atC.trace)).toBe(id)
    expect(atC).toMatchObject({ hop: 1, path: [a.peerId, b.peerId], peer: b.peerId })
    // by trace id as well as by task id
    expect((await a.trace(id)).tasks.map(t => t.taskId)).toEqual([root.id])

    // audit entries are appended asynchronously: wait for the last one to land
    const events = await waitFor(async () => {
      const entries = (await a.audit.query({ trace: id })).entries
      return entries.some(e => e.kind === 'task.result' && e.outcome === 'completed' && e.id === root.id) ? entries : undefined
    }, 'the result in the audit log')
    expect(events.every(e => e.trace !== undefined && traceId(e.trace) === id)).toBe(true)
    expect(events.some(e => e.kind === 'task.delegate' && e.outcome === 'sent' && e.id === root.id && e.peer === b.peerId)).toBe(true)
    expect(events.some(e => e.kind === 'send' && e.peer === b.peerId)).toBe(true)
    expect(events.some(e => e.kind === 'receive' && e.peer === b.peerId)).toBe(true)
    expect(report.events.some(e => e.kind === 'task.delegate' && e.id === root.id)).toBe(true)
    // the analyst's log is indexed by the same trace id
    await waitFor(async () => (await c.audit.query({ trace: id })).entries.some(e => e.kind === 'task.delegate' && e.outcome === 'accepted' && e.id === sub.taskId), 'the analyst\'s audit of the sub-task')
    // unrelated traces are not mixed in
    const other = await a.delegate(b.peerId, 'other', { capability: 'plan' })
    await a.tasks.result(other.id, { timeout: 30_000 })
    expect((await a.audit.query({ trace: id })).entries.every(e => traceId(e.trace!) === id)).toBe(true)
    expect((await a.trace(root.id)).tasks.map(t => t.taskId)).toEqual([root.id])
    const missing = await a.trace('nope').catch(e => e)
    expect(missing.name).toBe('NotFoundError')
  })
})
