/**
 * `pmesh mcp` as real processes: two `pmesh start` daemons, two `pmesh mcp` servers spawned over
 * stdio and driven by the MCP SDK's `Client`; the embedded mode (no daemon); the daemon dying
 * while attached; the parent dying. Waits are on conditions, bounded; nothing asserts on time
 * beyond generous "no hang" bounds.
 */
import { execFileSync, spawn } from 'node:child_process'
import { closeSync, openSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { waitFor } from '../support/wait-for.js'
import { afterEach, describe, expect, it } from 'vitest'
// the SDK is a dependency of @persona-mesh/mcp, not of the workspace root
import { Client } from '../../packages/mcp/node_modules/@modelcontextprotocol/sdk/dist/esm/client/index.js'
import { StdioClientTransport } from '../../packages/mcp/node_modules/@modelcontextprotocol/sdk/dist/esm/client/stdio.js'
import { PMESH, Processes } from './processes.js'
import type { CallToolResult } from '../../packages/mcp/node_modules/@modelcontextprotocol/sdk/dist/esm/types.js'
import type { ChildProcess } from 'node:child_process'

const until = async <T>(condition: () => T | Promise<T>, what: string, timeout = 30_000): Promise<NonNullable<T>> => waitFor(condition, what, timeout, 100)

const LOOPBACK = ['--no-mdns', '--listen', '/ip4/127.0.0.1/tcp/0']

interface McpProcess {
  client: Client
  transport: StdioClientTransport
  pid: number
  stderr: () => string
  /** Anything on stdout that is not the protocol shows up here (the client could not parse it). */
  errors: Error[]
}

/** Running and not a zombie (an orphan's new parent may be slow to reap it). */
function alive (pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z'
  } catch {
    return false
  }
}


/** Resolves when the server process has gone (its stdio closed). */
function onClose (transport: StdioClientTransport): Promise<void> {
  return new Promise((resolve) => {
    const previous = transport.onclose
    transport.onclose = () => { previous?.(); resolve() }
  })
}

async function call (client: Client, name: string, args: Record<string, unknown> = {}): Promise<any> {
  const result = await client.callTool({ name, arguments: args }, undefined, { timeout: 120_000 }) as CallToolResult
  if (result.isError === true) throw new Error(`${name} failed: ${JSON.stringify(result.content)}`)
  expect(result.structuredContent).toHaveProperty('inbox')
  return result.structuredContent
}

describe('pmesh mcp as real processes', () => {
  const procs = new Processes()
  const servers: McpProcess[] = []

  /** `pmesh mcp` over stdio, connected. */
  async function mcp (name: string, home: string, extra: string[] = []): Promise<McpProcess> {
    const transport = new StdioClientTransport({
      command: process.execPath,
      args: [PMESH, 'mcp', '--name', name, '--home', home, ...extra],
      stderr: 'pipe'
    })
    let stderr = ''
    transport.stderr?.on('data', (chunk: Buffer) => { stderr += chunk.toString('utf8') })
    const client = new Client({ name: 'e2e', version: '0.0.0' })
    const errors: Error[] = []
    client.onerror = (err) => { errors.push(err) }
    await client.connect(transport)
    const server = { client, transport, pid: transport.pid!, stderr: () => stderr, errors }
    servers.push(server)
    return server
  }

  afterEach(async () => {
    await Promise.allSettled(servers.splice(0).map(async (s) => {
      await s.client.close()
      if (alive(s.pid)) process.kill(s.pid, 'SIGKILL')
    }))
    await procs.teardown()
  })

  it('two daemons, two MCP servers: find, send, wait (untrusted), reply in thread, ack; a task delegated and completed by the agent', async () => {
    const home = await procs.home()
    const aria = await procs.start('aria', home)
    const kira = await procs.start('kira', home, ['--bootstrap', aria.multiaddrs[0]!, '--capability', 'review:code'])
    const a = await mcp('aria', home)
    const b = await mcp('kira', home)
    expect(a.stderr()).toContain('attached to the running node of persona aria')

    const { tools } = await a.client.listTools()
    expect(tools).toHaveLength(16)
    expect(tools.every(t => t.name.startsWith('mesh_') && t.outputSchema !== undefined)).toBe(true)
    expect(a.client.getInstructions()).toMatch(/peer content is data/i)

    // A finds B by capability
    const found = await until(async () => {
      const r = await call(a.client, 'mesh_find', { query: 'review' })
      return r.results.find((x: { peerId: string }) => x.peerId === kira.peerId)
    }, 'aria to find kira by capability')
    expect(found).toMatchObject({ name: 'kira', verified: true, card: { trust: 'untrusted_peer_content' } })

    // A sends; B's wait returns it wrapped as untrusted
    const sent = await call(a.client, 'mesh_send', { to: 'kira', text: 'please review PR 12 \u001b[31m(urgent)\u202E', thread: 'pr-12' })
    expect(sent).toMatchObject({ status: 'queued', to: { peerId: kira.peerId, name: 'kira' } })
    const waited = await call(b.client, 'mesh_wait', { timeout_s: 60 })
    expect(waited.timed_out).toBe(false)
    expect(waited.messages[0]).toMatchObject({
      id: sent.id,
      content: { from: { peerId: aria.peerId, name: 'aria', verified: true }, trust: 'untrusted_peer_content', body: { text: 'please review PR 12 (urgent)' }, thread: 'pr-12' }
    })
    expect(waited.inbox).toEqual({ unread: 1, cursor: waited.messages[0].cursor })

    // B replies in the thread; A gets it and acks it
    const reply = await call(b.client, 'mesh_send', { to: aria.peerId, text: 'LGTM with one nit', thread: 'pr-12', reply_to: sent.id })
    const got = await call(a.client, 'mesh_wait', { timeout_s: 60, thread: 'pr-12' })
    expect(got.messages[0]).toMatchObject({ id: reply.id, content: { from: { name: 'kira' }, reply_to: sent.id, body: { text: 'LGTM with one nit' } } })
    const acked = await call(a.client, 'mesh_ack', { ids: [reply.id] })
    expect(acked).toMatchObject({ results: [{ id: reply.id, result: 'acked' }], inbox: { unread: 0 } })
    await call(b.client, 'mesh_ack', { ids: [sent.id] })

    // a task delegated by A lands in B's inbox (B advertises review, no handler); B's agent completes it
    const delegated = await call(a.client, 'mesh_delegate', { capability: 'review', input: { pr: 12 } })
    expect(delegated.task).toMatchObject({ direction: 'outgoing', capability: 'review', peer: { peerId: kira.peerId } })
    const taskId = delegated.task.id
    const incoming = await call(b.client, 'mesh_wait', { kind: 'task.delegate', timeout_s: 60 })
    expect(incoming.messages[0]).toMatchObject({ kind: 'task.delegate', task_id: taskId, content: { from: { name: 'aria' }, trust: 'untrusted_peer_content' } })
    const shown = await until(async () => call(b.client, 'mesh_task', { id: taskId }), 'kira to record the incoming task')
    expect(shown.task).toMatchObject({ direction: 'incoming', mode: 'agent', theirs: { body: { input: { pr: 12 } } } })
    await call(b.client, 'mesh_task_update', { id: taskId, status: 'accepted' })
    await call(b.client, 'mesh_task_update', { id: taskId, status: 'working', progress: 60, message: 'reading the diff' })
    const done = await call(b.client, 'mesh_task_update', { id: taskId, status: 'completed', result: { verdict: 'approve', nits: 1 } })
    expect(done.task.status).toBe('completed')
    const result = await call(a.client, 'mesh_task', { id: taskId, wait_s: 60 })
    expect(result).toMatchObject({ timed_out: false, task: { status: 'completed', theirs: { trust: 'untrusted_peer_content', from: { name: 'kira' }, body: { result: { verdict: 'approve', nits: 1 } } } } })

    // bad arguments: an isError result, and the server keeps serving
    const bad = await a.client.callTool({ name: 'mesh_send', arguments: { to: 7 } }) as CallToolResult
    expect(bad.isError).toBe(true)
    expect((await call(a.client, 'mesh_whoami')).name).toBe('aria')
    // stdout carried nothing but the protocol
    expect([...a.errors, ...b.errors]).toEqual([])
  })

  it('embedded mode: no daemon, pmesh mcp runs the node itself and stops it on SIGTERM', async () => {
    const home = await procs.home()
    const kira = await procs.start('kira', home)
    const solo = await mcp('solo', home, [...LOOPBACK, '--bootstrap', kira.multiaddrs[0]!])
    expect(solo.stderr()).toContain('no daemon running: started an embedded node for persona solo')
    const me = await call(solo.client, 'mesh_whoami')
    expect(me).toMatchObject({ name: 'solo', running: true })

    const sent = await call(solo.client, 'mesh_send', { to: kira.peerId, text: 'hi from an embedded node' })
    await until(async () => {
      const inbox = await procs.run(['inbox', '--name', 'kira', '--home', home, '--json'])
      return inbox.code === 0 && (JSON.parse(inbox.stdout) as { messages: Array<{ id: string }> }).messages.some(m => m.id === sent.id)
    }, 'kira to receive the embedded node\'s message')

    process.kill(solo.pid, 'SIGTERM')
    await until(() => !alive(solo.pid), 'pmesh mcp to exit on SIGTERM', 20_000)
    // the embedded node is gone with it: the persona's data dir is free for a daemon
    const daemon = await procs.start('solo', home)
    expect(daemon.peerId).toBe(me.peerId)
  })

  it('stdin closing ends pmesh mcp (no ghost node)', async () => {
    const home = await procs.home()
    const solo = await mcp('solo', home, LOOPBACK)
    await call(solo.client, 'mesh_whoami')
    const closed = onClose(solo.transport)
    // end stdin only, no signal: the process must leave by itself
    ;(solo.transport as unknown as { _process: ChildProcess })._process.stdin!.end()
    await closed
    expect(alive(solo.pid)).toBe(false)
    expect(solo.stderr()).toContain('stdin closed; stopping')
  })

  it('the daemon dying while attached: a clear isError, then pmesh mcp exits with a message (no hang)', async () => {
    const home = await procs.home()
    const aria = await procs.start('aria', home)
    const a = await mcp('aria', home)
    expect((await call(a.client, 'mesh_whoami')).peerId).toBe(aria.peerId)
    const exited = onClose(a.transport)

    const pending = a.client.callTool({ name: 'mesh_wait', arguments: { timeout_s: 120 } }, undefined, { timeout: 120_000 }) as Promise<CallToolResult>
    await until(async () => {
      // the wait is registered on the daemon once a second call gets through after it
      await call(a.client, 'mesh_whoami')
      return true
    }, 'the wait to be under way')
    aria.child.kill('SIGKILL')
    const result = await pending
    expect(result.isError).toBe(true)
    expect(JSON.stringify(result.content)).toMatch(/lost this persona's node/)

    await until(async () => { await exited; return true }, 'pmesh mcp to exit', 20_000)
    expect(alive(a.pid)).toBe(false)
    expect(a.stderr()).toMatch(/lost the node of persona aria.*pmesh start --name aria/s)
  })

  it('the parent dying ends pmesh mcp even with stdin still open', async () => {
    const home = await procs.home()
    // stdin is a FIFO this test holds open for reading and writing, so it never reaches EOF (a pipe
    // from spawn() would be closed by Node when the middle process dies)
    const fifo = join(home, 'stdin.fifo')
    execFileSync('mkfifo', [fifo])
    const stdin = openSync(fifo, 'r+')
    // a middle process runs pmesh mcp on that stdin, then is killed
    const middle = spawn(process.execPath, ['-e', `
      const { spawn } = require('node:child_process')
      const child = spawn(process.execPath, ${JSON.stringify([PMESH, 'mcp', '--name', 'orphan', '--home', home, ...LOOPBACK])}, { stdio: ['inherit', 'ignore', 'inherit'] })
      process.stdout.write(child.pid + '\\n')
    `], { stdio: [stdin, 'pipe', 'pipe'] })
    let stderr = ''
    middle.stderr!.setEncoding('utf8').on('data', (c: string) => { stderr += c })
    const pid = Number(await new Promise<string>((resolve) => { createInterface({ input: middle.stdout! }).once('line', resolve) }))
    try {
      await until(() => stderr.includes('started an embedded node'), 'pmesh mcp to start')
      middle.kill('SIGKILL')
      await until(() => !alive(pid), 'the orphaned pmesh mcp to exit', 20_000)
      expect(stderr).toMatch(/parent process \d+ went away; stopping/)
    } finally {
      if (alive(pid)) process.kill(pid, 'SIGKILL')
      closeSync(stdin)
    }
  })
})
