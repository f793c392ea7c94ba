// Store-and-forward, across restarts and kill -9. Two `pmesh start` daemons on 127.0.0.1:
// scribe sends to archivist while archivist is down; scribe is killed -9 (twice) and restarted;
// archivist comes back, and later is killed -9 and restarted too. Prints a ledger of every message
// (sent / queued / delivered / received) and checks the promise: each message whose send()
// resolved ends up in archivist's inbox exactly once. Exits non-zero if it does not.
// mDNS stays off; every process and the temp dir are cleaned up (also on Ctrl-C).
import { spawn } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { connectMesh } from '@persona-mesh/node'

const PMESH = fileURLToPath(import.meta.resolve('@persona-mesh/cli/bin'))
const home = await mkdtemp(join(tmpdir(), 'pmesh-offline-'))
const t0 = performance.now()
const say = (text) => { console.log(`[${((performance.now() - t0) / 1000).toFixed(2).padStart(5)}s] ${text}`) }
const daemons = new Map() // name -> { child, info }

function check (condition, message) {
  if (!condition) throw new Error(`check failed: ${message}`)
}

/** Poll until `fn` returns something truthy; bounded in time and in attempts. */
async function waitFor (what, fn, { timeout = 20_000, interval = 100 } = {}) {
  const deadline = Date.now() + timeout
  for (let i = 0; i < 2000 && Date.now() < deadline; i++) {
    const value = await fn().catch(() => undefined)
    if (value) return value
    await new Promise(resolve => setTimeout(resolve, interval))
  }
  throw new Error(`timed out after ${timeout} ms waiting for ${what}`)
}

/** `pmesh start` with mDNS off on 127.0.0.1; resolves with its JSON line {peerId, name, multiaddrs}. */
async function start (name, extra = []) {
  const child = spawn(process.execPath, [PMESH, '--home', home, '--name', name, 'start', '--listen', '/ip4/127.0.0.1/tcp/0', '--no-mdns', ...extra], { stdio: ['ignore', 'pipe', 'pipe'] })
  let stderr = ''
  child.stderr.setEncoding('utf8').on('data', (chunk) => { stderr = (stderr + chunk).slice(-4000) })
  const line = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${name} did not start within 20 s: ${stderr}`)), 20_000)
    createInterface({ input: child.stdout }).once('line', (l) => { clearTimeout(timer); resolve(l) })
    child.once('exit', (code, signal) => { clearTimeout(timer); reject(new Error(`${name} exited (${signal ?? code}): ${stderr}`)) })
  })
  const info = JSON.parse(line)
  daemons.set(name, { child, info })
  return info
}

async function stop (name, signal) {
  const daemon = daemons.get(name)
  if (daemon === undefined) return
  daemons.delete(name)
  const { child } = daemon
  if (child.exitCode !== null || child.signalCode !== null) return
  const exited = new Promise(resolve => child.once('exit', resolve))
  child.kill(signal)
  const force = setTimeout(() => child.kill('SIGKILL'), 10_000)
  await exited
  clearTimeout(force)
}

/** Attach to a daemon for one job, like a `pmesh` command does. */
async function withMesh (name, fn) {
  const mesh = await connectMesh({ name, home })
  try {
    return await fn(mesh)
  } finally {
    mesh.close()
  }
}

let cleaning
async function cleanup () {
  cleaning ??= (async () => {
    await Promise.all([...daemons.keys()].map(name => stop(name, 'SIGTERM')))
    await rm(home, { recursive: true, force: true })
  })()
  return cleaning
}
process.once('SIGINT', () => {
  console.log('\ninterrupted: stopping the daemons and removing their data')
  void cleanup().finally(() => process.exit(130))
})

const ledger = [] // { n, id, phase, queued }

async function send (phase, count) {
  await withMesh('scribe', async (scribe) => {
    for (let i = 0; i < count; i++) {
      const n = ledger.length + 1
      const result = await scribe.send('archivist', { n, note: `entry ${n}, written ${phase}` }, { thread: 'ledger' })
      ledger.push({ n, id: result.id, phase, queued: result.status })
    }
  })
  say(`scribe: send() × ${count} resolved (${phase}): ${ledger.slice(-count).map(e => `#${e.n} ${e.queued}`).join(', ')}`)
}

async function outboxOf (ids) {
  return withMesh('scribe', async (scribe) => Promise.all(ids.map(async id => scribe.outbox.get(id))))
}

async function inboxCounts () {
  return withMesh('archivist', async (archivist) => {
    const page = await archivist.inbox.read({ thread: 'ledger', kind: 'message', limit: 1000 })
    const counts = new Map()
    for (const e of page.entries) counts.set(e.id, (counts.get(e.id) ?? 0) + 1)
    return { counts, order: page.entries.map(e => e.body.n) }
  })
}

let failed = false
try {
  say('── both up')
  const archivist = await start('archivist')
  say(`archivist up as ${archivist.peerId.slice(-8)} on ${archivist.multiaddrs[0]}`)
  let scribe = await start('scribe', ['--bootstrap', archivist.multiaddrs[0]])
  say(`scribe up as ${scribe.peerId.slice(-8)}, bootstrapped from archivist`)
  await waitFor('scribe to know archivist by name', async () => withMesh('scribe', async m => (await m.resolve('archivist')) === archivist.peerId))
  await send('while both were up', 2)
  await waitFor('the first two to be delivered', async () => (await outboxOf(ledger.map(e => e.id))).every(r => r?.status === 'delivered'))
  say('scribe: #1 and #2 delivered')

  say('── archivist goes down (SIGTERM)')
  await stop('archivist', 'SIGTERM')
  await send('while archivist was down', 3)
  const queued = await outboxOf(ledger.slice(2).map(e => e.id))
  check(queued.every(r => r?.status === 'queued'), 'the three wait in scribe\'s outbox')

  say('── scribe is killed -9 and restarted')
  await stop('scribe', 'SIGKILL')
  const scribeId = scribe.peerId
  scribe = await start('scribe')
  check(scribe.peerId === scribeId, 'scribe restarts with the same identity')
  const survived = await outboxOf(ledger.slice(2).map(e => e.id))
  check(survived.every(r => r?.status === 'queued'), 'after kill -9, the outbox still holds #3-#5')
  say(`scribe back (same PeerId: ${scribe.peerId.slice(-8)}); outbox still holds #3-#5 as queued`)
  await send('after scribe\'s first kill -9, archivist still down', 2)

  say('── scribe is killed -9 right after send() resolved, and restarted')
  await stop('scribe', 'SIGKILL')
  scribe = await start('scribe')
  const all = await outboxOf(ledger.slice(2).map(e => e.id))
  check(all.every(r => r?.status === 'queued'), 'after the second kill -9, #3-#7 are all queued')
  say(`scribe back; outbox: ${all.length} queued for archivist`)

  say('── archivist comes back (bootstrapping from scribe)')
  const back = performance.now()
  await start('archivist', ['--bootstrap', scribe.multiaddrs[0]])
  await waitFor('every message to be delivered', async () => (await outboxOf(ledger.map(e => e.id))).every(r => r?.status === 'delivered'))
  say(`scribe: all ${ledger.length} delivered, ${((performance.now() - back) / 1000).toFixed(2)} s after archivist's process started`)

  say('── archivist is killed -9 and restarted: its inbox survives, nothing arrives twice')
  const before = await inboxCounts()
  await stop('archivist', 'SIGKILL')
  await start('archivist', ['--bootstrap', scribe.multiaddrs[0]])
  const after = await inboxCounts()

  const final = await outboxOf(ledger.map(e => e.id))
  console.log('\n  #  id          sent                                               send()  outbox     in outbox  archivist inbox (before / after its kill -9)')
  for (const [i, e] of ledger.entries()) {
    const record = final[i]
    console.log(`  ${String(e.n).padStart(1)}  …${e.id.slice(-8)}  ${e.phase.padEnd(49)}  ${e.queued.padEnd(6)}  ${(record?.status ?? 'missing').padEnd(9)}  ${record ? `${((record.updatedAt - record.createdAt) / 1000).toFixed(2)} s`.padStart(9) : '        -'}  ${before.counts.get(e.id) ?? 0} / ${after.counts.get(e.id) ?? 0}`)
  }
  console.log('')
  check(ledger.every(e => e.queued === 'queued'), 'every send() resolved queued')
  check(final.every(r => r?.status === 'delivered'), 'every message ended delivered')
  for (const { counts } of [before, after]) {
    check(ledger.every(e => counts.get(e.id) === 1), 'each message is in archivist\'s inbox exactly once')
    check(counts.size === ledger.length, 'and nothing else is')
  }
  check(after.order.join(',') === ledger.map(e => e.n).join(','), `in the order sent (got ${after.order.join(',')})`)
  say(`OK: ${ledger.length} sent, ${ledger.length} delivered, ${ledger.length} received exactly once, in order — across 2 kill -9 of the sender and 1 of the recipient`)
} catch (err) {
  failed = true
  console.error(`offline-delivery failed: ${err.message}`)
}
await cleanup()
process.exit(failed ? 1 : 0)
