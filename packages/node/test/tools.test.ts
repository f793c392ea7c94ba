/**
 * Remote tools between real nodes in this process (TCP on 127.0.0.1, mDNS off, temp homes):
 * registration with a zod schema and with a JSON Schema, advertisement in the card, calls,
 * validation NACKs with the validator's message, unknown tools, failing handlers (no leak),
 * output schema mismatches, and the audit trail. Waits are on conditions; no timing assertions.
 */

import type { MeshNode } from '@persona-mesh/node'
import type { ToolSpec } from '@persona-mesh/protocol'
import { NackError } from '@persona-mesh/protocol'
import { afterEach, describe, expect, it } from 'vitest'
import { z } from 'zod'
import { TestMesh, waitFor } from './harness.js'

async function link (a: MeshNode, b: MeshNode): Promise<void> {
  if (a.libp2p.getConnections(b.libp2p.peerId).length === 0) await a.dial(b.multiaddrs[0]!)
  await waitFor(async () => (await a.cards()).some(c => c.peerId === b.peerId) && (await b.cards()).some(c => c.peerId === a.peerId), `cards between ${a.name} and ${b.name}`)
}

/** `caller`'s view of `owner`'s tools, once it lists `names` exactly. */
async function toolsSeen (caller: MeshNode, owner: MeshNode, names: string[]): Promise<ToolSpec[]> {
  const want = [...names].sort()
  return waitFor(async () => {
    const tools = await caller.tools.list(owner.peerId)
    return JSON.stringify(tools.map(t => t.name).sort()) === JSON.stringify(want) ? tools : undefined
  }, `${caller.name} to see ${owner.name}'s tools ${want.join(', ')}`)
}

async function nack (promise: Promise<unknown>): Promise<NackError> {
  const err = await promise.then(() => undefined, (e: unknown) => e)
  expect(err).toBeInstanceOf(NackError)
  return err as NackError
}

describe('tools: register, advertise, call', () => {
  const mesh = new TestMesh()
  afterEach(async () => { await mesh.teardown() })

  async function pair (): Promise<{ owner: MeshNode, caller: MeshNode }> {
    const owner = await mesh.node({ name: 'owner' })
    const caller = await mesh.node({ name: 'caller' })
    await link(owner, caller)
    return { owner, caller }
  }

  it('a zod-schema tool is advertised in the card (as JSON Schema) and called with validated args', async () => {
    const { owner, caller } = await pair()
    const seen: Array<{ args: unknown, from: string, aborted: boolean }> = []
    await owner.tools.register('analyze_code', {
      description: 'Counts lines and finds TODOs',
      inputSchema: z.object({ code: z.string().min(1), language: z.enum(['ts', 'py']), maxTodos: z.number().int().positive().optional() }),
      outputSchema: z.object({ lines: z.number(), todos: z.array(z.string()) }),
      handler: (args: { code: string, maxTodos?: number }, ctx) => {
        seen.push({ args, from: ctx.from, aborted: ctx.signal.aborted })
        const lines = args.code.split('\n')
        return { lines: lines.length, todos: lines.filter(l => l.includes('TODO')).slice(0, args.maxTodos ?? 10) }
      }
    })
    // our own list, and the card
    expect((await owner.tools.list()).map(t => t.name)).toEqual(['analyze_code'])
    expect((await owner.card()).tools.map(t => t.name)).toEqual(['analyze_code'])

    const [spec] = await toolsSeen(caller, owner, ['analyze_code'])
    expect(spec).toMatchObject({ name: 'analyze_code', description: 'Counts lines and finds TODOs' })
    expect(spec!.inputSchema).toMatchObject({
      type: 'object',
      properties: { code: { type: 'string', minLength: 1 }, language: { enum: ['ts', 'py'] } },
      required: expect.arrayContaining(['code', 'language'])
    })
    expect(spec!.outputSchema).toMatchObject({ type: 'object', properties: { lines: { type: 'number' } } })

    const result = await caller.tools.call(owner.peerId, 'analyze_code', { code: 'a\n// TODO x\nb // TODO y', language: 'ts', maxTodos: 1 })
    expect(result).toEqual({ lines: 3, todos: ['// TODO x'] })
    expect(seen).toEqual([{ args: { code: 'a\n// TODO x\nb // TODO y', language: 'ts', maxTodos: 1 }, from: caller.peerId, aborted: false }])
    // by persona name too
    expect(await caller.tools.call('owner', 'analyze_code', { code: 'x', language: 'py' })).toEqual({ lines: 1, todos: [] })
  })

  it('a JSON-Schema tool validates args and refuses bad ones with invalid_request and the validation message', async () => {
    const { owner, caller } = await pair()
    let runs = 0
    await owner.tools.register('add', {
      description: 'a + b',
      inputSchema: { type: 'object', properties: { a: { type: 'number' }, b: { type: 'number' } }, required: ['a', 'b'], additionalProperties: false },
      handler: (args: { a: number, b: number }) => { runs++; return args.a + args.b }
    })
    const [spec] = await toolsSeen(caller, owner, ['add'])
    expect(spec!.inputSchema).toEqual({ type: 'object', properties: { a: { type: 'number' }, b: { type: 'number' } }, required: ['a', 'b'], additionalProperties: false })
    expect(spec!.outputSchema).toBeUndefined()

    expect(await caller.tools.call(owner.peerId, 'add', { a: 2, b: 40 })).toBe(42)

    const missing = await nack(caller.tools.call(owner.peerId, 'add', { a: 1 }))
    expect(missing.reason).toBe('invalid_request')
    expect(missing.detail).toContain("must have required property 'b'")
    const wrongType = await nack(caller.tools.call(owner.peerId, 'add', { a: 1, b: 'two' }))
    expect(wrongType.reason).toBe('invalid_request')
    expect(wrongType.detail).toBe('/b must be number')
    const extra = await nack(caller.tools.call(owner.peerId, 'add', { a: 1, b: 2, c: 3 }))
    expect(extra.reason).toBe('invalid_request')
    expect(extra.detail).toContain('additional properties')
    const notObject = await nack(caller.tools.call(owner.peerId, 'add', [1, 2]))
    expect(notObject.reason).toBe('invalid_request')
    expect(runs).toBe(1)
  })

  it('zod validation failures carry the path and message', async () => {
    const { owner, caller } = await pair()
    let runs = 0
    await owner.tools.register('greet', {
      inputSchema: z.object({ name: z.string().min(2), times: z.number().int().max(3) }),
      handler: (args: { name: string, times: number }) => { runs++; return `hi ${args.name}`.repeat(args.times) }
    })
    await toolsSeen(caller, owner, ['greet'])
    const short = await nack(caller.tools.call(owner.peerId, 'greet', { name: 'x', times: 1 }))
    expect(short.reason).toBe('invalid_request')
    expect(short.detail).toMatch(/^name: /)
    const many = await nack(caller.tools.call(owner.peerId, 'greet', { name: 'kira', times: 9 }))
    expect(many.detail).toMatch(/^times: /)
    const none = await nack(caller.tools.call(owner.peerId, 'greet', null))
    expect(none.reason).toBe('invalid_request')
    expect(none.detail).toMatch(/^args: /)
    expect(runs).toBe(0)
    expect(await caller.tools.call(owner.peerId, 'greet', { name: 'kira', times: 2 })).toBe('hi kirahi kira')
  })

  it('an unknown tool is NACK incapable; a peer without tools lists none', async () => {
    const { owner, caller } = await pair()
    await owner.tools.register('known', { inputSchema: z.any(), handler: () => 'ok' })
    await toolsSeen(caller, owner, ['known'])
    const unknown = await nack(caller.tools.call(owner.peerId, 'no_such_tool', {}))
    expect(unknown.reason).toBe('incapable')
    expect(unknown.detail).toContain('no_such_tool')
    expect(await owner.tools.list(caller.peerId)).toEqual([])
  })

  it('a handler that throws is NACK internal_error without its message; a NackError it throws keeps its reason', async () => {
    const { owner, caller } = await pair()
    await owner.tools.register('explode', {
      inputSchema: z.object({}),
      handler: () => { throw new Error('db password is hunter2 at /srv/secret') }
    })
    await owner.tools.register('choosy', {
      inputSchema: z.object({ n: z.number() }),
      handler: (args: { n: number }) => { if (args.n > 1) throw new NackError('overloaded', 'try later'); return args.n }
    })
    await toolsSeen(caller, owner, ['explode', 'choosy'])
    const boom = await nack(caller.tools.call(owner.peerId, 'explode', {}))
    expect(boom.reason).toBe('internal_error')
    expect(boom.message).not.toContain('hunter2')
    expect(boom.message).not.toContain('/srv/secret')
    expect(boom.detail).toBe('tool explode failed')
    const choosy = await nack(caller.tools.call(owner.peerId, 'choosy', { n: 2 }))
    expect(choosy).toMatchObject({ reason: 'overloaded', detail: 'try later' })
    expect(await caller.tools.call(owner.peerId, 'choosy', { n: 1 })).toBe(1)
    // the owner's audit keeps what happened (the caller never sees it)
    await waitFor(async () => (await owner.audit.query({ peer: caller.peerId })).entries.some(e => e.kind === 'tool.call' && e.id === 'explode' && e.outcome === 'failed' && String(e.detail).includes('hunter2')), 'the failure in the owner\'s audit')
  })

  it('a result that does not match the outputSchema is NACK internal_error', async () => {
    const { owner, caller } = await pair()
    await owner.tools.register('liar', {
      inputSchema: z.object({ ok: z.boolean() }),
      outputSchema: z.object({ count: z.number() }),
      handler: (args: { ok: boolean }) => args.ok ? { count: 1 } : { count: 'many' }
    })
    await owner.tools.register('json_liar', {
      inputSchema: { type: 'object' },
      outputSchema: { type: 'array', items: { type: 'string' } },
      handler: () => ['a', 2]
    })
    await toolsSeen(caller, owner, ['liar', 'json_liar'])
    expect(await caller.tools.call(owner.peerId, 'liar', { ok: true })).toEqual({ count: 1 })
    const bad = await nack(caller.tools.call(owner.peerId, 'liar', { ok: false }))
    expect(bad.reason).toBe('internal_error')
    expect(bad.detail).toBe('tool liar returned an invalid result')
    const badJson = await nack(caller.tools.call(owner.peerId, 'json_liar', {}))
    expect(badJson.reason).toBe('internal_error')
  })

  it('registration: names are checked, duplicates and broken JSON Schemas refused; unregister leaves the card', async () => {
    const { owner, caller } = await pair()
    const badName = await owner.tools.register('has spaces', { inputSchema: z.any(), handler: () => null }).catch(e => e)
    expect(badName.name).toBe('InvalidArgumentError')
    await owner.tools.register('once', { inputSchema: z.any(), handler: () => 1 })
    const twice = await owner.tools.register('once', { inputSchema: z.any(), handler: () => 2 }).catch(e => e)
    expect(twice.name).toBe('DuplicateHandlerError')
    const broken = await owner.tools.register('broken', { inputSchema: { type: 'no-such-type' }, handler: () => null }).catch(e => e)
    expect(broken.name).toBe('InvalidArgumentError')
    await owner.tools.register('twice', { inputSchema: z.any(), handler: () => 2 })
    await toolsSeen(caller, owner, ['once', 'twice'])
    await owner.tools.unregister('once')
    await toolsSeen(caller, owner, ['twice'])
    const gone = await nack(caller.tools.call(owner.peerId, 'once', null))
    expect(gone.reason).toBe('incapable')
  })

  it('many calls at once are kept apart; each call and refusal is audited on the owner', async () => {
    const { owner, caller } = await pair()
    await owner.tools.register('square', {
      inputSchema: z.object({ n: z.number() }),
      handler: async (args: { n: number }) => { await new Promise(resolve => setImmediate(resolve)); return args.n * args.n }
    })
    await toolsSeen(caller, owner, ['square'])
    const answers = await Promise.all(Array.from({ length: 50 }, async (_, n) => caller.tools.call(owner.peerId, 'square', { n })))
    expect(answers).toEqual(Array.from({ length: 50 }, (_, n) => n * n))
    await nack(caller.tools.call(owner.peerId, 'square', { n: 'x' }))
    await waitFor(async () => {
      const entries = (await owner.audit.query({ peer: caller.peerId, limit: 1000 })).entries.filter(e => e.kind === 'tool.call' && e.id === 'square')
      return entries.filter(e => e.outcome === 'ok').length === 50 && entries.some(e => e.outcome === 'refused: invalid_request')
    }, 'the calls in the owner\'s audit')
  })

  // Regression (fixed): ToolDefinition.timeout ("Longest a call may run. @default 30000") is never read: every
  // tool runs under the rpc registration's 60 s (or the caller's own timeout). Fix in
  // ToolService.serve: run the handler with `AbortSignal.any([ctx.signal,
  // AbortSignal.timeout(definition.timeout ?? 30_000)])` as its signal, race it against that
  // signal, and throw `NackError('timeout', `tool ${tool} did not finish within ${ms} ms`)` when
  // the tool's own limit fired.
  it('a tool that runs past its own timeout is NACK timeout and its signal is aborted', async () => {
    const { owner, caller } = await pair()
    let aborted = false
    await owner.tools.register('sleepy', {
      inputSchema: z.any(),
      timeout: 300,
      handler: async (_args, ctx) => {
        await new Promise<void>(resolve => { ctx.signal.addEventListener('abort', () => { aborted = true; resolve() }, { once: true }) })
        return 'woke'
      }
    })
    await toolsSeen(caller, owner, ['sleepy'])
    const err = await caller.tools.call(owner.peerId, 'sleepy', null, { timeout: 8000 }).catch(e => e)
    expect(err.name).toBe('NackError')
    expect(err.reason).toBe('timeout')
    expect(aborted).toBe(true)
  })
})
