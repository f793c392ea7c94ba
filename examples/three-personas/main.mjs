// Three personas, three processes, one mesh: the story of Persona Mesh in ~15 seconds.
//
//   node examples/three-personas/main.mjs          run the story, check every step, clean up
//   node examples/three-personas/main.mjs --keep   leave the three personas running to play with
//
// aria (writer) and kira (analyst) and the coordinator each run in their own process
// (persona.mjs embeds createMeshNode). They find each other through ONE bootstrap address and
// the DHT; mDNS stays off (127.0.0.1 only). This script drives the coordinator the way `pmesh`
// and `pmesh mcp` do — through its control socket (connectMesh) — and checks every answer.
// Exits non-zero if any step of the story fails; stops every process and removes its temp dir,
// also on Ctrl-C.
import { fork } from 'node:child_process'
import { openSync } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { isDeepStrictEqual, parseArgs } from 'node:util'
import { connectMesh } from '@persona-mesh/node'
import { review } from './work.mjs'

const USAGE = 'usage: node examples/three-personas/main.mjs [--keep]\n  --keep  leave the three personas running afterwards and print how to attach to them'
let keep, help
try {
  ({ values: { keep, help } } = parseArgs({ options: { keep: { type: 'boolean', default: false }, help: { type: 'boolean', short: 'h' } } }))
} catch (err) {
  console.error(`${err.message}\n${USAGE}`)
  process.exit(2)
}
if (help) {
  console.log(USAGE)
  process.exit(0)
}
const PERSONA = fileURLToPath(new URL('./persona.mjs', import.meta.url))
const PMESH = fileURLToPath(import.meta.resolve('@persona-mesh/cli/bin'))
const home = await mkdtemp(join(tmpdir(), 'pmesh-three-'))
const t0 = performance.now()
const personas = new Map() // name -> { child, info }
const attached = new Set() // control connections to close

// ---- narration ------------------------------------------------------------------------------

const clock = () => `[${((performance.now() - t0) / 1000).toFixed(2).padStart(5)}s]`
const say = (who, text) => { console.log(`${clock()} ${who.padStart(11)} │ ${text}`) }
const short = (peerId) => `${peerId.slice(0, 8)}…${peerId.slice(-6)}`
let stepNo = 0
const results = []

/** One chapter of the story: narrated, timed, and any failure ends the story. */
async function step (title, fn) {
  stepNo++
  console.log(`\n${clock()} ── ${stepNo}. ${title}`)
  const start = performance.now()
  try {
    await fn()
    const ms = performance.now() - start
    results.push({ title, ok: true, ms })
    say('✓', `${title} (${(ms / 1000).toFixed(2)} s)`)
  } catch (err) {
    results.push({ title, ok: false, ms: performance.now() - start })
    if (!interrupted) say('✗', `${title}: ${err.message}`)
    throw err
  }
}

function check (condition, message) {
  if (!condition) throw new Error(`check failed: ${message}`)
}

/** Poll until `fn` returns something truthy; bounded in time and in attempts. */
async function waitFor (what, fn, { timeout = 15_000, interval = 150 } = {}) {
  const deadline = Date.now() + timeout
  let last
  for (let i = 0; i < 1000 && Date.now() < deadline; i++) {
    try {
      const value = await fn()
      if (value) return value
    } catch (err) {
      last = err
    }
    await new Promise(resolve => setTimeout(resolve, interval))
  }
  throw new Error(`timed out after ${timeout} ms waiting for ${what}${last ? ` (${last.message})` : ''}`)
}

// ---- the persona processes ------------------------------------------------------------------

async function startPersona (name, args = []) {
  const log = join(home, `${name}.log`)
  const out = keep ? openSync(log, 'a') : 'inherit'
  const child = fork(PERSONA, [name, home, ...args, '--log', log], {
    stdio: ['ignore', out, out, 'ipc'],
    // --keep: own process group, so a later Ctrl-C in this terminal does not stop them
    detached: keep
  })
  const info = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${name} did not start within 20 s`)), 20_000)
    child.on('message', (msg) => {
      if (msg?.type === 'log') say(name, msg.text)
      if (msg?.type === 'ready') { clearTimeout(timer); resolve(msg) }
    })
    child.once('exit', (code, signal) => { clearTimeout(timer); reject(new Error(`${name} exited (${signal ?? code}) before it was ready`)) })
  })
  personas.set(name, { child, info })
  return info
}

async function stopPersona (name, signal = 'SIGTERM') {
  const persona = personas.get(name)
  if (persona === undefined) return
  const { child } = persona
  if (child.exitCode === null && child.signalCode === null) {
    const exited = new Promise(resolve => child.once('exit', resolve))
    child.kill(signal)
    const force = setTimeout(() => child.kill('SIGKILL'), 10_000)
    await exited
    clearTimeout(force)
  }
  personas.delete(name)
}

async function attach (name) {
  const mesh = await connectMesh({ name, home })
  attached.add(mesh)
  return mesh
}

let cleaning
async function cleanup () {
  cleaning ??= (async () => {
    for (const mesh of attached) mesh.close()
    await Promise.all([...personas.keys()].map(name => stopPersona(name)))
    await rm(home, { recursive: true, force: true })
  })()
  return cleaning
}

let interrupted = false
process.once('SIGINT', () => {
  interrupted = true
  console.log('\ninterrupted: stopping the personas and removing their data')
  void cleanup().finally(() => process.exit(130))
})

// ---- the story ------------------------------------------------------------------------------

const SAMPLE = [
  '// parse "k=v;k=v" into an object',
  'function parse (text) {',
  '  const out = {}',
  '  for (const pair of text.split(";")) {',
  '    if (pair) {',
  '      const [k, v] = pair.split("=")',
  '      out[k.trim()] = v?.trim() // TODO: unescape values',
  '    }',
  '  }',
  '  return out',
  '}',
  'const keys = (o) => Object.keys(o).sort()'
].join('\n')
const EXPECTED_ANALYSIS = { language: 'js', lines: 12, codeLines: 11, comments: 1, functions: 2, todos: 1, maxNesting: 3, longestLine: 56, warnings: ['1 TODO/FIXME left'] }

let failed = false
const ids = {}
let kiraFirstAddr = ''
let coord
try {
  await step('Three personas start; one bootstrap address, then the DHT', async () => {
    const aria = await startPersona('aria')
    ids.aria = aria.peerId
    say('aria', `up as ${short(aria.peerId)} on ${aria.multiaddrs[0]} (the bootstrap address)`)
    const bootstrap = `${aria.multiaddrs[0]}`
    check(bootstrap.includes('/p2p/'), 'aria\'s address names its PeerId')
    const [kira, coordinator] = await Promise.all([
      startPersona('kira', ['--bootstrap', bootstrap]),
      startPersona('coordinator', ['--bootstrap', bootstrap])
    ])
    ids.kira = kira.peerId
    kiraFirstAddr = kira.multiaddrs[0]
    ids.coordinator = coordinator.peerId
    say('kira', `up as ${short(kira.peerId)}, joined through aria`)
    say('coordinator', `up as ${short(coordinator.peerId)}, joined through aria`)
    coord = await attach('coordinator')
  })

  const workers = {}
  await step('The coordinator finds its workers by capability (not by name or id)', async () => {
    for (const capability of ['write_story', 'review', 'edit_prose', 'analyze_code']) {
      const started = performance.now()
      const hit = await waitFor(`a persona offering ${capability}`, async () => {
        const found = await coord.find(capability, { limit: 5 })
        return found.find(r => r.card.capabilities.some(c => c.name === capability))
      })
      say('coordinator', `find "${capability}" → ${hit.name} (${short(hit.peerId)}; matched ${hit.matched.join('+')}; ${hit.online ? 'online' : 'offline'}) in ${(performance.now() - started).toFixed(0)} ms`)
      workers[capability] = hit
    }
    check(workers.write_story.peerId === ids.aria && workers.edit_prose.peerId === ids.aria, 'write_story and edit_prose are offered by aria')
    check(workers.review.peerId === ids.kira && workers.analyze_code.peerId === ids.kira, 'review and analyze_code are offered by kira')
  })

  // progress of delegated tasks, as the coordinator's node reports it
  const watched = new Map()
  coord.addEventListener('task:update', (evt) => {
    const t = evt.detail
    const label = watched.get(t.id)
    if (label === undefined) return
    const line = `${t.status}${t.progress !== undefined && t.status === 'working' ? ` ${t.progress}%` : ''}${t.message !== undefined && t.status === 'working' ? ` — ${t.message}` : ''}`
    if (label.last === line) return
    label.last = line
    say('coordinator', `  ${label.text}: ${line}`)
  })

  /** Delegate by capability, show progress, return the result (the mesh picks the worker). */
  async function delegate (capability, input) {
    const task = await coord.delegate({ capability }, input, { timeout: 30_000 })
    watched.set(task.id, { text: `${capability} task ${task.id.slice(-6)}` })
    const done = await coord.tasks.wait(task.id, { timeout: 30_000 })
    check(done.status === 'completed', `${capability} ended ${done.status}${done.error ? `: ${done.error.message}` : ''}`)
    const worker = (await coord.card(done.peer)).name
    check(done.peer === workers[capability].peerId, `${capability} ran on the persona that offers it (got ${worker})`)
    say('coordinator', `${capability} done by ${worker} in ${done.updatedAt - done.createdAt} ms (${done.history.length} status updates)`)
    return done.result
  }

  let story
  await step('A two-stage pipeline: aria drafts, kira reviews, aria revises', async () => {
    const draft = await delegate('write_story', { topic: 'lost radio signals', paragraphs: 3 })
    say('coordinator', `draft "${draft.title}": ${draft.text.split(/\s+/).length} words`)
    const notes = await delegate('review', { text: draft.text })
    check(notes.notes.length > 0, 'kira found something to improve in a first draft')
    say('coordinator', `kira's review: score ${notes.score}/100, ${notes.notes.length} notes: ${notes.notes.map(n => n.suggestion).join('; ')}`)
    const revised = await delegate('edit_prose', { text: draft.text, notes: notes.notes })
    check(revised.applied === notes.notes.length, `aria applied every note (${revised.applied}/${notes.notes.length})`)
    const recheck = review(revised.text)
    check(recheck.notes.length === 0, `the revision passes the same review (${recheck.notes.length} notes left)`)
    story = { title: draft.title, text: revised.text }
    say('coordinator', `final text (${revised.text.split(/\s+/).length} words, 0 notes left):`)
    for (const line of revised.text.match(/.{1,88}(\s|$)/g)) say('', `    ${line.trim()}`)
  })

  await step('A remote tool: the coordinator calls kira\'s analyze_code', async () => {
    const tools = await coord.tools.list(ids.kira)
    const tool = tools.find(t => t.name === 'analyze_code')
    check(tool !== undefined, 'kira\'s card lists analyze_code')
    say('coordinator', `kira's card offers tool analyze_code, input schema {${Object.keys(tool.inputSchema.properties ?? {}).join(', ')}} (from zod)`)
    const started = performance.now()
    const analysis = await coord.tools.call(ids.kira, 'analyze_code', { code: SAMPLE, language: 'js' }, { timeout: 10_000 })
    say('coordinator', `analyze_code answered in ${(performance.now() - started).toFixed(1)} ms: ${JSON.stringify(analysis)}`)
    check(isDeepStrictEqual(analysis, EXPECTED_ANALYSIS), `analysis matches the expected metrics ${JSON.stringify(EXPECTED_ANALYSIS)}`)
    try {
      await coord.tools.call(ids.kira, 'analyze_code', { code: 42 }, { timeout: 10_000 })
      check(false, 'a call with bad arguments is refused')
    } catch (err) {
      check(err.name === 'NackError' && err.reason === 'invalid_request', `bad arguments are refused as invalid_request (got ${err.name}: ${err.message})`)
      say('coordinator', `analyze_code { code: 42 } refused by kira's schema: ${err.message}`)
    }
  })

  await step('A broadcast on #status reaches both subscribers', async () => {
    const [aria, kira] = [await attach('aria'), await attach('kira')]
    const body = { status: 'story ready', title: story.title }
    const sent = await coord.broadcast('status', body)
    say('coordinator', `broadcast ${sent.id.slice(-6)} on #status: sent to ${sent.recipients} peer(s), ${sent.subscribers} subscriber(s) known${sent.warning ? ` — ${sent.warning}` : ''}`)
    for (const [name, mesh] of [['aria', aria], ['kira', kira]]) {
      const got = await waitFor(`${name} to receive the broadcast`, async () => {
        const page = await mesh.inbox.read({ topic: 'status', kind: 'broadcast', limit: 50 })
        const copies = page.entries.filter(e => e.id === sent.id)
        return copies.length > 0 && copies
      }, { timeout: 10_000 })
      check(got.length === 1, `${name} has the broadcast exactly once`)
      check(isDeepStrictEqual(got[0].body, body), `${name} got the body as sent`)
      check(got[0].from === ids.coordinator, `${name} sees the coordinator as its signer`)
      say('coordinator', `${name} has it in its inbox once (topic #${got[0].topic}, signed by the coordinator)`)
    }
  })

  const sentIds = []
  await step('kira goes offline; the coordinator keeps sending (durable)', async () => {
    await stopPersona('kira')
    say('kira', 'process stopped: offline')
    for (const [i, text] of ['review chapter 2 when you are back', 'also: the title needs a second look', 'no rush — thanks!'].entries()) {
      const sent = await coord.send('kira', { text, n: i + 1 }, { thread: 'while-away' })
      check(sent.status === 'queued', `send resolves once queued (got ${sent.status})`)
      sentIds.push(sent.id)
      say('coordinator', `send → kira #${i + 1} ${sent.id.slice(-6)}: ${sent.status} (in the outbox, synced to disk)`)
    }
    const queued = await coord.outbox.list({ to: ids.kira, status: 'queued', limit: 50 })
    check(sentIds.every(id => queued.entries.some(r => r.id === id)), 'all three wait in the coordinator\'s outbox')
    say('coordinator', `outbox: ${queued.entries.length} queued for kira`)
  })

  await step('kira comes back and receives each message exactly once', async () => {
    const delivered = new Set()
    const onDelivered = (evt) => { if (sentIds.includes(evt.detail.id)) delivered.add(evt.detail.id) }
    coord.addEventListener('message:delivered', onDelivered)
    const back = performance.now()
    const kira = await startPersona('kira', ['--bootstrap', personas.get('aria').info.multiaddrs[0]])
    check(kira.peerId === ids.kira, 'kira came back with the same identity (PeerId)')
    const port = (addr) => addr.split('/')[4]
    say('kira', `back as ${short(kira.peerId)} on ${kira.multiaddrs[0]} (same key${port(kira.multiaddrs[0]) !== port(kiraFirstAddr) ? `, new port: it was ${port(kiraFirstAddr)}` : ''})`)
    await waitFor('the three messages to be delivered', async () => {
      // events say it first; the outbox record is the truth
      for (const id of sentIds) {
        if (!delivered.has(id) && (await coord.outbox.get(id))?.status === 'delivered') delivered.add(id)
      }
      return delivered.size === sentIds.length
    }, { timeout: 20_000, interval: 100 })
    coord.removeEventListener('message:delivered', onDelivered)
    say('coordinator', `outbox: 3/3 delivered ${((performance.now() - back) / 1000).toFixed(2)} s after kira's process started`)
    const mesh = await attach('kira')
    const inbox = await mesh.inbox.read({ from: ids.coordinator, kind: 'message', limit: 100 })
    const got = inbox.entries.map(e => e.id)
    check(got.length === sentIds.length, `kira's inbox holds ${sentIds.length} messages from the coordinator (found ${got.length})`)
    check(new Set(got).size === got.length, 'no duplicates')
    check(sentIds.every(id => got.includes(id)), 'the ids kira received are the ids the coordinator sent')
    check(inbox.entries.every((e, i) => e.body.n === i + 1), 'in the order they were sent')
    const acked = await mesh.inbox.ack(got)
    check(acked.every(a => a === 'acked'), 'kira acks them (handled)')
    say('kira', `inbox: ${got.length} messages, ids ${got.map(id => id.slice(-6)).join(', ')} — each once, in order; acked`)
  })
} catch (err) {
  failed = true
  if (!interrupted && !/^check failed|timed out/.test(err.message)) console.error(err.stack ?? err)
}

const total = ((performance.now() - t0) / 1000).toFixed(1)
const passed = results.filter(r => r.ok).length
if (interrupted) await new Promise(() => {}) // the SIGINT handler cleans up and exits 130
console.log(`\n${failed ? 'FAILED' : 'OK'}: ${passed}/${results.length} steps of the story passed in ${total} s`)

if (keep && !failed) {
  for (const mesh of attached) mesh.close()
  const pids = []
  for (const { child, info } of personas.values()) {
    child.send({ type: 'detach' })
    child.unref()
    pids.push(info.pid)
  }
  const p = `node ${PMESH} --home ${home}`
  console.log(`
The three personas keep running (pids ${pids.join(' ')}); their data and logs are in ${home}.
Attach with pmesh:
  ${p} --name coordinator status
  ${p} --name coordinator find review
  ${p} --name coordinator send kira "hello again"
  ${p} --name kira inbox --all
  ${p} --name aria peers
Or give Claude Code a persona over MCP (pmesh mcp attaches to the running node):
  claude mcp add aria -- node ${PMESH} mcp --home ${home} --name aria
Stop them:
  kill ${pids.join(' ')} && rm -rf ${home}`)
  process.exit(0)
}
await cleanup()
process.exit(failed ? 1 : 0)
