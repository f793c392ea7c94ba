/**
 * Tasks, tools and trace across real processes: `pmesh start` daemons driven through the real CLI
 * (and the control socket for events), and embedded-node workers (test/e2e/fixtures/task-worker.mjs)
 * for the code handlers a daemon does not have. Every wait is a bounded loop on a condition.
 */

import type { ChildProcess } from 'node:child_process'
import { spawn } from 'node:child_process'
import { dirname, join } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { afterEach, describe, expect, it } from 'vitest'
import type { CliResult } from './processes.js'
import { Processes } from './processes.js'

const FIXTURE = join(dirname(fileURLToPath(import.meta.url)), 'fixtures/task-worker.mjs')
const NODE_DIST = new URL('../../packages/node/dist/index.js', import.meta.url).href

interface Worker {
  peerId: string
  name: string
  multiaddrs: string[]
  child: ChildProcess
  events: Array<Record<string, unknown>>
  stderr: () => string
}

interface WorkerConfig {
  name: string
  home: string
  bootstrap?: string[]
  capabilities?: string[]
  handlers?: Record<string, 'summarize' | 'plan' | 'analyze'>
  tools?: boolean
  needs?: string[]
  autoRelease?: boolean
}

interface TaskJson {
  id: string
  peer: string
  status: string
  progress?: number
  message?: string
  result?: unknown
  error?: { reason?: string, message: string }
  direction: string
  capability: string
}

/** Poll `fn` until it returns a value (not undefined/false); bounded. */
async function until<T> (fn: () => Promise<T | undefined | false>, what: string, timeout = 45_000, every = 250): Promise<T> {
  const deadline = Date.now() + timeout
  let last: unknown
  while (Date.now() < deadline) {
    try {
      const value = await fn()
      if (value !== undefined && value !== false) return value
    } catch (err) {
      last = err
    }
    await new Promise(resolve => setTimeout(resolve, every))
  }
  throw new Error(`timed out waiting for ${what}${last !== undefined ? ` (last error: ${(last as Error).message})` : ''}`)
}

describe('tasks across real processes', () => {
  const procs = new Processes()
  const workers = new Set<ChildProcess>()
  const closers: Array<() => void> = []

  afterEach(async () => {
    for (const close of closers.splice(0)) close()
    await Promise.allSettled([...workers].map(async child => procs.stop(child, 'SIGKILL')))
    workers.clear()
    await procs.teardown()
  })

  async function worker (config: WorkerConfig, timeout = 60_000): Promise<Worker> {
    const child = spawn(process.execPath, [FIXTURE, JSON.stringify(config)], { stdio: ['pipe', 'pipe', 'pipe'] })
    workers.add(child)
    child.once('exit', () => workers.delete(child))
    let stderr = ''
    child.stderr!.setEncoding('utf8').on('data', (chunk: string) => { stderr += chunk })
    const events: Array<Record<string, unknown>> = []
    const lines = createInterface({ input: child.stdout! })
    // Node 20 has no Promise.withResolvers outside the node package's polyfill
    let resolveReady!: (info: { peerId: string, name: string, multiaddrs: string[] }) => void
    let rejectReady!: (err: Error) => void
    const ready = { promise: new Promise<{ peerId: string, name: string, multiaddrs: string[] }>((resolve, reject) => { resolveReady = resolve; rejectReady = reject }) }
    lines.on('line', (line) => {
      let message: Record<string, unknown>
      try { message = JSON.parse(line) } catch { return }
      if (typeof message.peerId === 'string' && message.event === undefined) resolveReady(message as never)
      else events.push(message)
    })
    const timer = setTimeout(() => { rejectReady(new Error(`worker ${config.name} not ready within ${timeout} ms; stderr: ${stderr}`)) }, timeout)
    child.once('exit', (code) => { rejectReady(new Error(`worker ${config.name} exited with ${code}; stderr: ${stderr}`)) })
    try {
      const info = await ready.promise
      return { ...info, child, events, stderr: () => stderr }
    } finally {
      clearTimeout(timer)
    }
  }

  async function pmesh (name: string, home: string, args: string[]): Promise<CliResult> {
    return procs.run([...args, '--name', name, '--home', home])
  }

  async function pmeshJson<T> (name: string, home: string, args: string[]): Promise<T> {
    const result = await pmesh(name, home, [...args, '--json'])
    if (result.code !== 0) throw new Error(`pmesh ${args.join(' ')} exited ${result.code}: ${result.stderr}`)
    return JSON.parse(result.stdout) as T
  }

  /** Until `pmesh find CAPABILITY` on `name` lists `peerId`. */
  async function findable (name: string, home: string, capability: string, peerId: string): Promise<void> {
    await until(async () => {
      const result = await pmesh(name, home, ['find', capability, '--json'])
      if (result.code !== 0) return false
      return (JSON.parse(result.stdout) as Array<{ peerId: string }>).some(r => r.peerId === peerId)
    }, `${name} to find ${capability} on ${peerId}`)
  }

  /** The daemon's Mesh over its control socket, with events on. */
  async function attach (name: string, home: string): Promise<{ mesh: any, updates: TaskJson[] }> {
    const { connectMesh } = await import(NODE_DIST)
    const mesh = await connectMesh({ name, home })
    closers.push(() => { mesh.close() })
    const updates: TaskJson[] = []
    mesh.addEventListener('task:update', (evt: CustomEvent<TaskJson>) => { updates.push(evt.detail) })
    await mesh.call('events.subscribe')
    return { mesh, updates }
  }

  it('a coordinator daemon finds a worker by capability, delegates through the CLI, sees progress and gets the result', async () => {
    const home = await procs.home()
    const coordinator = await procs.start('coordinator', home)
    const kira = await worker({ name: 'kira', home, bootstrap: [coordinator.multiaddrs[0]!], capabilities: ['summarize'], handlers: { summarize: 'summarize' } })
    await findable('coordinator', home, 'summarize', kira.peerId)
    const { mesh, updates } = await attach('coordinator', home)

    const task = await pmeshJson<TaskJson>('coordinator', home, ['delegate', '--capability', 'summarize', '{"text":"peer to peer meshes for agents"}'])
    expect(task).toMatchObject({ peer: kira.peerId, capability: 'summarize', direction: 'outgoing' })

    // progress reaches the coordinator while the worker is held at 50 %
    await until(async () => updates.some(u => u.id === task.id && u.status === 'working' && u.progress === 50 && u.message === 'halfway'), 'progress 50 on the coordinator')
    const shown = await pmeshJson<TaskJson>('coordinator', home, ['task', task.id])
    expect(shown).toMatchObject({ id: task.id, status: 'working', progress: 50 })
    const table = await pmesh('coordinator', home, ['task', task.id])
    expect(table.stdout).toContain('status    working 50% — halfway')

    kira.child.stdin!.write('go\n')
    const done = await mesh.tasks.wait(task.id, { timeout: 45_000 }) as TaskJson
    expect(done).toMatchObject({ status: 'completed', result: { summary: 'peer to', words: 6 }, progress: 100 })
    await until(async () => updates.some(u => u.id === task.id && u.status === 'completed'), 'the completed event on the control socket')
    const statuses = updates.filter(u => u.id === task.id).map(u => u.status).filter((s, i, all) => all[i - 1] !== s)
    expect(statuses).toEqual(['submitted', 'accepted', 'working', 'completed'])
    expect(kira.events.filter(e => e.event === 'run')).toEqual([{ event: 'run', capability: 'summarize', taskId: task.id, from: coordinator.peerId }])

    const listed = await pmeshJson<TaskJson[]>('coordinator', home, ['tasks', '--outgoing'])
    expect(listed.map(t => [t.id, t.status])).toEqual([[task.id, 'completed']])

    // and once more in one command, waiting for the result
    kira.child.stdin!.write('go\n')
    const waited = await pmeshJson<TaskJson>('coordinator', home, ['delegate', 'kira', '{"text":"one two three"}', '--capability', 'summarize', '--wait', '60'])
    expect(waited).toMatchObject({ status: 'completed', result: { summary: 'one two', words: 3 } })
  })

  it('the worker is offline when the task is sent; it starts later and the task completes', async () => {
    const home = await procs.home()
    const coordinator = await procs.start('coordinator', home)
    const config: WorkerConfig = { name: 'kira', home, bootstrap: [coordinator.multiaddrs[0]!], capabilities: ['summarize'], handlers: { summarize: 'summarize' }, autoRelease: true }
    const first = await worker(config)
    await findable('coordinator', home, 'summarize', first.peerId)
    expect(await procs.stop(first.child)).toBe(0)

    const task = await pmeshJson<TaskJson>('coordinator', home, ['delegate', '--capability', 'summarize', '{"text":"written while you were away"}', '--timeout', '300'])
    expect(task).toMatchObject({ peer: first.peerId, status: 'submitted' })
    const waiting = await pmeshJson<{ entries: Array<{ to: string, status: string }> }>('coordinator', home, ['outbox'])
    expect(waiting.entries.some(e => e.to === first.peerId && e.status === 'queued')).toBe(true)
    expect((await pmeshJson<TaskJson>('coordinator', home, ['task', task.id])).status).toBe('submitted')

    const again = await worker(config)
    expect(again.peerId).toBe(first.peerId)
    const done = await until(async () => {
      const t = await pmeshJson<TaskJson>('coordinator', home, ['task', task.id])
      return ['completed', 'failed', 'rejected', 'expired', 'canceled'].includes(t.status) ? t : undefined
    }, 'the task to end')
    expect(done).toMatchObject({ status: 'completed', result: { summary: 'written while', words: 5 } })
    expect(again.events.filter(e => e.event === 'run').map(e => e.taskId)).toEqual([task.id])
    expect(first.events.filter(e => e.event === 'run')).toEqual([])
  })

  it('a remote tool call with a schema: listed from the card, called through the CLI, bad args refused with the reason', async () => {
    const home = await procs.home()
    const coordinator = await procs.start('coordinator', home)
    const kira = await worker({ name: 'kira', home, bootstrap: [coordinator.multiaddrs[0]!], tools: true })
    const tools = await until(async () => {
      const list = await pmeshJson<Array<{ name: string, inputSchema: unknown, outputSchema?: unknown }>>('coordinator', home, ['tools', 'kira'])
      return list.length > 0 ? list : undefined
    }, 'kira\'s tools on the coordinator')
    expect(tools).toEqual([{
      name: 'word_count',
      description: 'Counts the words of a text',
      inputSchema: { type: 'object', properties: { text: { type: 'string', minLength: 1 } }, required: ['text'], additionalProperties: false },
      outputSchema: { type: 'object', properties: { words: { type: 'integer' } }, required: ['words'] }
    }])

    const ok = await pmesh('coordinator', home, ['call', 'kira', 'word_count', '--args', '{"text":"three little words"}'])
    expect(ok.stderr).toBe('')
    expect(ok.code).toBe(0)
    expect(JSON.parse(ok.stdout)).toEqual({ words: 3 })
    expect(kira.events).toContainEqual({ event: 'tool', tool: 'word_count', from: coordinator.peerId })

    const bad = await pmesh('coordinator', home, ['call', 'kira', 'word_count', '--args', '{"text":""}'])
    expect(bad.code).toBe(1)
    expect(bad.stderr).toContain('invalid_request')
    expect(bad.stderr).toContain('/text must NOT have fewer than 1 characters')
    const extra = await pmesh('coordinator', home, ['call', kira.peerId, 'word_count', '--args', '{"text":"x","more":1}'])
    expect(extra.code).toBe(1)
    expect(extra.stderr).toContain('must NOT have additional properties')
    const unknown = await pmesh('coordinator', home, ['call', 'kira', 'no_such_tool'])
    expect(unknown.code).toBe(1)
    expect(unknown.stderr).toContain('incapable')
    expect(kira.events.filter(e => e.event === 'tool')).toHaveLength(1)
  })

  it('trace across three processes: coordinator → lead → analyst, drawn by pmesh trace as a nested tree', async () => {
    const home = await procs.home()
    const coordinator = await procs.start('coordinator', home)
    const analyst = await worker({ name: 'analyst', home, bootstrap: [coordinator.multiaddrs[0]!], capabilities: ['analyze'], handlers: { analyze: 'analyze' } })
    const lead = await worker({ name: 'lead', home, bootstrap: [coordinator.multiaddrs[0]!, analyst.multiaddrs[0]!], capabilities: ['plan'], handlers: { plan: 'plan' }, needs: ['analyze'] })
    await findable('coordinator', home, 'plan', lead.peerId)

    const done = await pmeshJson<TaskJson & { trace: string }>('coordinator', home, ['delegate', '--capability', 'plan', '"refactor the parser"', '--wait', '90'])
    expect(done).toMatchObject({ status: 'completed', peer: lead.peerId, result: { plan: 'REFACTOR THE PARSER' } })
    const delegated = lead.events.find(e => e.event === 'delegated')!
    expect(delegated).toMatchObject({ to: analyst.peerId })
    expect(analyst.events.filter(e => e.event === 'run')).toEqual([{ event: 'run', capability: 'analyze', taskId: delegated.taskId, from: lead.peerId }])

    const report = await pmeshJson<{ traceId: string, tasks: Array<{ taskId: string, peer: string, status: string, children: Array<{ taskId: string, peer: string, capability: string, status: string, children: unknown[] }> }>, events: Array<{ kind: string, trace?: string }> }>('coordinator', home, ['trace', done.id])
    expect(done.trace).toContain(report.traceId)
    expect(report.tasks).toHaveLength(1)
    expect(report.tasks[0]).toMatchObject({ taskId: done.id, peer: lead.peerId, status: 'completed' })
    expect(report.tasks[0]!.children).toEqual([{ taskId: delegated.taskId, peer: analyst.peerId, capability: 'analyze', status: 'completed', children: [] }])
    expect(report.events.some(e => e.kind === 'task.delegate')).toBe(true)

    const drawn = await pmesh('coordinator', home, ['trace', done.id])
    expect(drawn.code).toBe(0)
    const lines = drawn.stdout.split('\n')
    expect(lines[0]).toBe(`trace ${report.traceId}`)
    expect(lines[1]).toBe(`└─ plan → lead  completed  (${done.id})`)
    expect(lines[2]).toBe(`   └─ analyze → analyst  completed  (${delegated.taskId})`)
    expect(drawn.stdout).toContain('events here:')
  })

  it('an agent as worker: a daemon advertising a capability without code gets the task in its inbox and works it with pmesh task update', async () => {
    const home = await procs.home()
    const coordinator = await procs.start('coordinator', home)
    const reviewer = await procs.start('reviewer', home, ['--capability', 'review', '--bootstrap', coordinator.multiaddrs[0]!])
    await findable('coordinator', home, 'review', reviewer.peerId)
    const task = await pmeshJson<TaskJson>('coordinator', home, ['delegate', '--capability', 'review', '{"pr":42}'])
    expect(task.peer).toBe(reviewer.peerId)

    const incoming = await until(async () => {
      const list = await pmeshJson<TaskJson[]>('reviewer', home, ['tasks', '--incoming'])
      return list.find(t => t.id === task.id)
    }, 'the task on the reviewer')
    expect(incoming).toMatchObject({ status: 'submitted', capability: 'review', peer: coordinator.peerId })

    expect((await pmesh('reviewer', home, ['task', 'update', task.id, '--status', 'accepted'])).code).toBe(0)
    expect((await pmesh('reviewer', home, ['task', 'update', task.id, '--status', 'working', '--progress', '40', '--message', 'reading'])).code).toBe(0)
    await until(async () => {
      const t = await pmeshJson<TaskJson>('coordinator', home, ['task', task.id])
      return t.status === 'working' && t.progress === 40 && t.message === 'reading'
    }, 'progress 40 on the coordinator')
    const completed = await pmesh('reviewer', home, ['task', 'update', task.id, '--status', 'completed', '--result', '{"approve":true}'])
    expect(completed.stdout.trim()).toBe(`${task.id} completed`)
    const done = await until(async () => {
      const t = await pmeshJson<TaskJson>('coordinator', home, ['task', task.id])
      return t.status === 'completed' ? t : undefined
    }, 'completed on the coordinator')
    expect(done.result).toEqual({ approve: true })
    const again = await pmesh('reviewer', home, ['task', 'update', task.id, '--status', 'working'])
    expect(again.code).toBe(2)
  })
})
