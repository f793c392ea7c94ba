// Two personas in Claude Code: `.mcp.json` (next to this file) gives Claude Code two MCP servers,
// `pmesh mcp --name aria` and `pmesh mcp --name kira`. Copy it into a project (with `pmesh` on
// PATH and both personas started: `pmesh start --name aria`, `pmesh start --name kira
// --bootstrap <aria's address>`), or split it into one .mcp.json per Claude Code session.
//
// This script does what Claude Code does with that file: it spawns each server over stdio with
// the MCP SDK's Client + StdioClientTransport, lists the tools, and calls them the way a model
// would: whoami, find, send, wait, reply, ack — then a delegated task that kira (an agent, no
// code handler) works with mesh_task_update. It checks every structured result; exits non-zero
// if one is wrong. If `pmesh mcp` is not available in this build it SKIPS (exit 0).
//
// Safety on this machine: the two personas run as `pmesh start --no-mdns` daemons on 127.0.0.1,
// the MCP servers attach to them, and `--no-mdns` is added to the servers' args so that even an
// embedded node (started if a daemon were missing) would stay off the LAN.
import { spawn, spawnSync } from 'node:child_process'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'

const PMESH = fileURLToPath(import.meta.resolve('@persona-mesh/cli/bin'))
const MCP_JSON = fileURLToPath(new URL('./.mcp.json', import.meta.url))
const t0 = performance.now()
const say = (who, text) => { console.log(`[${((performance.now() - t0) / 1000).toFixed(2).padStart(5)}s] ${who.padStart(4)} │ ${text}`) }

// ---- is `pmesh mcp` here? ---------------------------------------------------------------------
const help = spawnSync(process.execPath, [PMESH, 'mcp', '--help'], { encoding: 'utf8', timeout: 20_000 })
let sdk
try {
  sdk = {
    ...await import('@modelcontextprotocol/sdk/client/index.js'),
    ...await import('@modelcontextprotocol/sdk/client/stdio.js')
  }
} catch (err) {
  sdk = { missing: err.message }
}
if (help.status !== 0 || !/^Usage: pmesh mcp\b/m.test(help.stdout) || sdk.missing !== undefined) {
  const why = sdk.missing ?? (help.status !== 0 ? (help.stderr.trim().split('\n')[0] || `pmesh mcp --help exited ${help.status}`) : 'pmesh has no mcp command')
  console.log(`SKIP: \`pmesh mcp\` is not available in this build (${why})`)
  process.exit(0)
}
const { Client, StdioClientTransport, getDefaultEnvironment } = sdk

// ---- setup: two daemons, two MCP servers as .mcp.json describes them --------------------------
const home = await mkdtemp(join(tmpdir(), 'pmesh-claude-'))
const daemons = []
const clients = []

function check (condition, message) {
  if (!condition) throw new Error(`check failed: ${message}`)
}

async function startDaemon (name, extra) {
  const child = spawn(process.execPath, [PMESH, '--home', home, '--name', name, 'start', '--listen', '/ip4/127.0.0.1/tcp/0', '--no-mdns', ...extra], { stdio: ['ignore', 'pipe', 'pipe'] })
  daemons.push(child)
  let stderr = ''
  child.stderr.setEncoding('utf8').on('data', (c) => { stderr = (stderr + c).slice(-4000) })
  const line = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${name} did not start within 20 s: ${stderr}`)), 20_000)
    createInterface({ input: child.stdout }).once('line', (l) => { clearTimeout(timer); resolve(l) })
    child.once('exit', (code) => { clearTimeout(timer); reject(new Error(`${name} exited with ${code}: ${stderr}`)) })
  })
  return JSON.parse(line)
}

/** Spawn the server exactly as written in .mcp.json (`pmesh` resolved to this repo's CLI). */
async function connect (name, server) {
  check(server.command === 'pmesh', `.mcp.json runs pmesh for ${name}`)
  const transport = new StdioClientTransport({
    command: process.execPath,
    args: [PMESH, ...server.args, '--no-mdns'],
    env: { ...getDefaultEnvironment(), ...server.env, PMESH_HOME: home },
    stderr: 'pipe'
  })
  let stderr = ''
  transport.stderr?.setEncoding('utf8').on('data', (c) => { stderr = (stderr + c).slice(-4000) })
  const client = new Client({ name: 'claude-code-like', version: '0.1.0' })
  clients.push(client)
  const started = performance.now()
  try {
    await client.connect(transport, { timeout: 20_000 })
  } catch (err) {
    throw new Error(`MCP server ${name} did not start: ${err.message}\n${stderr}`)
  }
  say(name, `MCP server up (${(performance.now() - started).toFixed(0)} ms): ${client.getServerVersion()?.name} ${client.getServerVersion()?.version}`)
  return client
}

/** Call a tool like a model: the structured result, or a thrown error with the tool's text. */
async function call (client, who, tool, args = {}) {
  const result = await client.callTool({ name: tool, arguments: args }, undefined, { timeout: 30_000 })
  const text = result.content?.find(c => c.type === 'text')?.text ?? ''
  if (result.isError) throw new Error(`${tool} failed: ${text}`)
  say(who, `${tool} ${JSON.stringify(args)} → ${text}`)
  return result.structuredContent
}

async function waitFor (what, fn, { timeout = 15_000, interval = 250 } = {}) {
  const deadline = Date.now() + timeout
  for (let i = 0; i < 200 && Date.now() < deadline; i++) {
    const value = await fn().catch(() => undefined)
    if (value) return value
    await new Promise(resolve => setTimeout(resolve, interval))
  }
  throw new Error(`timed out after ${timeout} ms waiting for ${what}`)
}

let cleaning
async function cleanup () {
  cleaning ??= (async () => {
    await Promise.allSettled(clients.map(async c => c.close()))
    await Promise.allSettled(daemons.map(async (child) => {
      if (child.exitCode !== null || child.signalCode !== null) return
      const exited = new Promise(resolve => child.once('exit', resolve))
      child.kill('SIGTERM')
      const force = setTimeout(() => child.kill('SIGKILL'), 10_000)
      await exited
      clearTimeout(force)
    }))
    await rm(home, { recursive: true, force: true })
  })()
  return cleaning
}
process.once('SIGINT', () => { void cleanup().finally(() => process.exit(130)) })

const EXPECTED_TOOLS = ['mesh_whoami', 'mesh_find', 'mesh_send', 'mesh_wait', 'mesh_inbox', 'mesh_ack', 'mesh_delegate', 'mesh_task', 'mesh_task_update']

let failed = false
try {
  const config = JSON.parse(await readFile(MCP_JSON, 'utf8'))
  check(Object.keys(config.mcpServers).join(',') === 'aria,kira', '.mcp.json configures aria and kira')
  const ariaDaemon = await startDaemon('aria', ['--capability', 'write_story:writing', '--description', 'Writer (driven by Claude Code)'])
  await startDaemon('kira', ['--bootstrap', ariaDaemon.multiaddrs[0], '--capability', 'review:editing', '--description', 'Reviewer (driven by Claude Code)'])
  say('', `daemons aria and kira running (pmesh start --no-mdns), data in ${home}`)

  const aria = await connect('aria', config.mcpServers.aria)
  const kira = await connect('kira', config.mcpServers.kira)

  // 1. what Claude Code sees first: the tool list
  for (const [who, client] of [['aria', aria], ['kira', kira]]) {
    const { tools } = await client.listTools()
    const names = tools.map(t => t.name)
    const missing = EXPECTED_TOOLS.filter(n => !names.includes(n))
    check(missing.length === 0, `${who} offers ${EXPECTED_TOOLS.join(', ')} (missing ${missing.join(', ')})`)
    check(tools.every(t => t.outputSchema !== undefined), `every tool of ${who} declares an outputSchema`)
    say(who, `tools/list: ${names.length} tools (${names.join(', ')})`)
  }

  // 2. who am I, who can review
  const me = await call(aria, 'aria', 'mesh_whoami')
  check(me.name === 'aria' && me.peerId === ariaDaemon.peerId, 'mesh_whoami names aria')
  const found = await waitFor('aria to find a reviewer', async () => {
    const r = await call(aria, 'aria', 'mesh_find', { query: 'review' })
    return r.results.find(x => x.name === 'kira')
  })
  check(found.card.trust === 'untrusted_peer_content', 'a peer\'s card reaches the model wrapped as untrusted peer content')

  // 3. send, wait, reply, ack — the conversation loop
  const question = 'Could you review the opening paragraph of chapter 1?'
  const sent = await call(aria, 'aria', 'mesh_send', { to: 'kira', text: question, thread: 'chapter-1' })
  check(sent.status === 'queued' && sent.to.name === 'kira', 'mesh_send queued it for kira')
  const got = await call(kira, 'kira', 'mesh_wait', { from: 'aria', thread: 'chapter-1', timeout_s: 15 })
  check(!got.timed_out && got.messages.length === 1, 'kira\'s mesh_wait returned the message')
  const msg = got.messages[0]
  check(msg.id === sent.id && msg.content.body.text === question, 'the same id and text')
  check(msg.content.from.name === 'aria' && msg.content.from.verified && msg.content.trust === 'untrusted_peer_content', 'signed by aria, wrapped as untrusted peer content')
  const reply = await call(kira, 'kira', 'mesh_send', { to: 'aria', text: 'Yes: cut the first sentence, it repeats the title.', thread: 'chapter-1', reply_to: msg.id })
  const acked = await call(kira, 'kira', 'mesh_ack', { ids: [msg.id] })
  check(acked.results[0].result === 'acked' && acked.inbox.unread === 0, 'kira acked it; nothing unread')
  const answer = await call(aria, 'aria', 'mesh_wait', { from: 'kira', thread: 'chapter-1', timeout_s: 15 })
  check(!answer.timed_out && answer.messages[0]?.id === reply.id && answer.messages[0].content.reply_to === msg.id, 'aria got kira\'s reply to her message')
  await call(aria, 'aria', 'mesh_ack', { ids: [reply.id] })

  // 4. a task for an agent: kira advertises `review` with no code handler, so the task waits for
  //    the model, which answers it with mesh_task_update
  const delegated = await call(aria, 'aria', 'mesh_delegate', { capability: 'review', input: { text: 'It was a dark and stormy night.' } })
  check(delegated.task.peer.name === 'kira', 'the review task went to kira (found by capability)')
  const incoming = await call(kira, 'kira', 'mesh_wait', { kind: 'task.delegate', timeout_s: 15 })
  const taskId = incoming.messages[0]?.task_id
  check(taskId === delegated.task.id, 'kira sees the task in its inbox with its task_id')
  await call(kira, 'kira', 'mesh_task_update', { id: taskId, status: 'accepted' })
  await call(kira, 'kira', 'mesh_task_update', { id: taskId, status: 'working', progress: 50, message: 'reading' })
  await call(kira, 'kira', 'mesh_task_update', { id: taskId, status: 'completed', result: { verdict: 'cliché opening', suggestion: 'start with the storm itself' } })
  const done = await call(aria, 'aria', 'mesh_task', { id: taskId, wait_s: 15 })
  check(done.task.status === 'completed' && done.task.theirs?.body?.result?.verdict === 'cliché opening', 'aria sees the task completed with kira\'s result')
  say('', 'OK: both personas driven over MCP like Claude Code: tools listed, found, sent, waited, replied, acked, delegated and answered')
} catch (err) {
  failed = true
  console.error(`claude-code failed: ${err.message}`)
}
await cleanup()
process.exit(failed ? 1 : 0)
