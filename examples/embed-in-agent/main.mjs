// Embedding: agent.mjs is an "agent" process with a mesh node inside (≤ 20 lines of setup,
// counted below). This script is a second process — another agent, "researcher", with its own
// embedded node — that joins through the librarian's address, finds it by capability, calls its
// remote tool and delegates a task to it. Checks every answer; exits non-zero if any is wrong.
// mDNS off, 127.0.0.1 only; the agent process and the temp dir are removed at the end.
import { spawn } from 'node:child_process'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { createMeshNode } from '@persona-mesh/node'

const AGENT = fileURLToPath(new URL('./agent.mjs', import.meta.url))
const MAX_SETUP_LINES = 20
const home = await mkdtemp(join(tmpdir(), 'pmesh-embed-'))
const t0 = performance.now()
const say = (text) => { console.log(`[${((performance.now() - t0) / 1000).toFixed(2).padStart(5)}s] ${text}`) }
let agent
let researcher

function check (condition, message) {
  if (!condition) throw new Error(`check failed: ${message}`)
}

async function waitFor (what, fn, { timeout = 15_000, interval = 150 } = {}) {
  const deadline = Date.now() + timeout
  for (let i = 0; i < 1000 && Date.now() < deadline; i++) {
    const value = await fn().catch(() => undefined)
    if (value) return value
    await new Promise(resolve => setTimeout(resolve, interval))
  }
  throw new Error(`timed out after ${timeout} ms waiting for ${what}`)
}

let cleaning
async function cleanup () {
  cleaning ??= (async () => {
    await researcher?.stop().catch(() => {})
    if (agent !== undefined && agent.exitCode === null && agent.signalCode === null) {
      const exited = new Promise(resolve => agent.once('exit', resolve))
      agent.kill('SIGTERM')
      const force = setTimeout(() => agent.kill('SIGKILL'), 10_000)
      await exited
      clearTimeout(force)
    }
    await rm(home, { recursive: true, force: true })
  })()
  return cleaning
}
process.once('SIGINT', () => { void cleanup().finally(() => process.exit(130)) })

let failed = false
try {
  // 1. the claim: the mesh setup in agent.mjs is at most 20 lines (code lines between the markers)
  const source = await readFile(AGENT, 'utf8')
  const block = source.split('// ---- mesh setup: begin ----')[1]?.split('// ---- mesh setup: end ----')[0] ?? ''
  const setupLines = block.split('\n').filter(l => l.trim() !== '' && !l.trim().startsWith('//')).length
  check(setupLines > 0 && setupLines <= MAX_SETUP_LINES, `agent.mjs sets its node up in at most ${MAX_SETUP_LINES} lines (counted ${setupLines})`)
  say(`agent.mjs embeds its node in ${setupLines} lines of setup (limit ${MAX_SETUP_LINES})`)

  // 2. the agent process
  agent = spawn(process.execPath, [AGENT], { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, AGENT_HOME: join(home, 'agent') } })
  const info = JSON.parse(await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('agent.mjs did not start within 20 s')), 20_000)
    createInterface({ input: agent.stdout }).once('line', (line) => { clearTimeout(timer); resolve(line) })
    agent.once('exit', (code) => { clearTimeout(timer); reject(new Error(`agent.mjs exited with ${code}`)) })
  }))
  say(`librarian agent (pid ${agent.pid}) is ${info.peerId.slice(-8)} on ${info.multiaddrs[0]}`)

  // 3. a second process with its own node: joins through the librarian's address
  researcher = await createMeshNode({ name: 'researcher', home: join(home, 'researcher'), listen: ['/ip4/127.0.0.1/tcp/0'], bootstrap: [info.multiaddrs[0]], mdns: false })
  say(`researcher (this process) is ${researcher.peerId.slice(-8)}`)

  const hit = await waitFor('a persona offering summarize', async () => (await researcher.find('summarize')).find(r => r.peerId === info.peerId))
  check(hit.name === 'librarian', 'found the librarian by its capability')
  say(`find "summarize" → ${hit.name} (matched ${hit.matched.join('+')})`)

  const tools = await researcher.tools.list(hit.peerId)
  check(tools.some(t => t.name === 'lookup' && t.inputSchema.properties?.term !== undefined), 'the librarian\'s card advertises lookup with its schema')
  say(`its card advertises tool(s): ${tools.map(t => `${t.name}(${Object.keys(t.inputSchema.properties ?? {}).join(', ')})`).join(', ')}`)

  const found = await researcher.tools.call(hit.peerId, 'lookup', { term: 'gossipsub' }, { timeout: 10_000 })
  check(found.entry?.startsWith('a pub/sub protocol'), `lookup gossipsub answered (${JSON.stringify(found)})`)
  say(`tools.call lookup {term: "gossipsub"} → ${JSON.stringify(found.entry)}`)
  try {
    await researcher.tools.call(hit.peerId, 'lookup', { term: '' }, { timeout: 10_000 })
    check(false, 'an empty term is refused')
  } catch (err) {
    check(err.name === 'NackError' && err.reason === 'invalid_request', `an empty term is refused invalid_request (got ${err.name}: ${err.message})`)
    say(`tools.call lookup {term: ""} → refused by the agent's zod schema: ${err.message}`)
  }

  const text = 'Peer to peer meshes let agents find each other without a central broker, deliver messages durably, and delegate work by capability.'
  const task = await researcher.delegate({ capability: 'summarize' }, { text, maxWords: 6 }, { timeout: 20_000 })
  const result = await researcher.tasks.result(task.id, { timeout: 20_000 })
  check(result.summary === 'Peer peer meshes agents find each', `the summary is right (${JSON.stringify(result)})`)
  const done = await researcher.tasks.get(task.id)
  check(done.peer === info.peerId && done.status === 'completed', 'the librarian completed the task')
  say(`delegate summarize → ${done.status} by librarian: ${JSON.stringify(result.summary)}`)
  say('OK: an agent embedded a node in a few lines; another process found it, called its tool and delegated to it')
} catch (err) {
  failed = true
  console.error(`embed-in-agent failed: ${err.message}`)
}
await cleanup()
process.exit(failed ? 1 : 0)
