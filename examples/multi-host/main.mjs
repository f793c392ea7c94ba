// Three "machines" (Linux network namespaces on one bridge, built by test/netns/harness.ts),
// one persona daemon in each with mDNS ON and no bootstrap address: they find each other on the
// "LAN", exchange cards, and the coordinator finds kira by capability, sends it a durable message
// and gets kira's reply. Checks every step; exits non-zero if one fails.
//
// Needs root (network namespaces) and iproute2; otherwise it SKIPS with the reason (exit 0).
// mDNS runs only inside the namespaces; this process (the host namespace) only talks to the
// daemons over their Unix control sockets. Namespaces, processes and the temp dir are removed at
// the end, also on failure and Ctrl-C.
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { isDeepStrictEqual } from 'node:util'
import { connectMesh } from '@persona-mesh/node'
import ts from 'typescript'

const PMESH = fileURLToPath(import.meta.resolve('@persona-mesh/cli/bin'))
const HARNESS = fileURLToPath(new URL('../../test/netns/harness.ts', import.meta.url))
const t0 = performance.now()
const say = (text) => { console.log(`[${((performance.now() - t0) / 1000).toFixed(2).padStart(5)}s] ${text}`) }

// the tests' netns harness is TypeScript: strip its types (Node 20 cannot) and load it as-is
const harnessJs = ts.transpileModule(await readFile(HARNESS, 'utf8'), {
  compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 }
}).outputText
const { createNetwork, netnsAvailability, waitFor } = await import(`data:text/javascript,${encodeURIComponent(harnessJs)}`)

const availability = netnsAvailability()
if (!availability.ok) {
  console.log(`SKIP: multi-host needs network namespaces: ${availability.reason}`)
  console.log('      (run it as root on Linux with iproute2, as CI does: sudo node examples/multi-host/main.mjs)')
  process.exit(0)
}

const PERSONAS = [
  { name: 'aria', capability: 'write_story:writing', description: 'Writer on host 0' },
  { name: 'kira', capability: 'review:editing', description: 'Analyst on host 1' },
  { name: 'coordinator', capability: 'coordinate', description: 'Coordinator on host 2' }
]

function check (condition, message) {
  if (!condition) throw new Error(`check failed: ${message}`)
}

let network
let home
const daemons = [] // { name, child, info, mesh, host, stderr }

/** `pmesh start` inside a namespace: listens on every interface there, mDNS on, no bootstrap. */
async function startDaemon (persona, host) {
  const child = network.spawn(host.ns, [
    process.execPath, PMESH, '--home', home, '--name', persona.name, 'start',
    '--listen', '/ip4/0.0.0.0/tcp/0', '--capability', persona.capability, '--description', persona.description
  ], { stdio: ['ignore', 'pipe', 'pipe'] })
  const daemon = { name: persona.name, child, host, stderr: '' }
  daemons.push(daemon)
  child.stderr.setEncoding('utf8').on('data', (chunk) => { daemon.stderr = (daemon.stderr + chunk).slice(-4000) })
  const line = await new Promise((resolve, reject) => {
    let out = ''
    const timer = setTimeout(() => reject(new Error(`${persona.name} did not start within 20 s: ${daemon.stderr}`)), 20_000)
    child.stdout.setEncoding('utf8').on('data', (chunk) => {
      out += chunk
      const nl = out.indexOf('\n')
      if (nl >= 0) { clearTimeout(timer); resolve(out.slice(0, nl)) }
    })
    child.once('exit', (code, signal) => { clearTimeout(timer); reject(new Error(`${persona.name} exited (${signal ?? code}): ${daemon.stderr}`)) })
  })
  daemon.info = JSON.parse(line)
  daemon.mesh = await connectMesh({ name: persona.name, home })
  return daemon
}

let cleaning
async function cleanup () {
  cleaning ??= (async () => {
    await Promise.allSettled(daemons.map(async (d) => {
      d.mesh?.close()
      if (d.child.exitCode !== null || d.child.signalCode !== null) return
      const exited = new Promise(resolve => d.child.once('exit', resolve))
      d.child.kill('SIGTERM')
      const force = setTimeout(() => d.child.kill('SIGKILL'), 5000)
      await exited
      clearTimeout(force)
    }))
    await network?.destroy()
    if (home !== undefined) await rm(home, { recursive: true, force: true })
  })()
  return cleaning
}
process.once('SIGINT', () => { void cleanup().finally(() => process.exit(130)) })

let failed = false
try {
  network = await createNetwork({ hosts: 3, prefix: 'pmex', subnet24: '10.212.0' })
  home = await mkdtemp(join(tmpdir(), 'pmesh-multihost-'))
  say(`three hosts on one bridge: ${network.hosts.map(h => `${h.ns} = ${h.ip}`).join(', ')}`)

  await Promise.all(PERSONAS.map(async (p, i) => startDaemon(p, network.hosts[i])))
  for (const d of daemons) {
    const ips = d.info.multiaddrs.map(ma => ma.split('/')[2])
    check(ips.includes(d.host.ip), `${d.name} listens on its host's address ${d.host.ip}`)
    say(`${d.name.padEnd(11)} on ${d.host.ip}: ${d.info.peerId.slice(-8)} — mDNS on, no bootstrap`)
  }
  const [aria, kira, coordinator] = daemons

  const discovering = performance.now()
  await waitFor('all three to find and connect to each other over mDNS', async () => {
    const peers = await Promise.all(daemons.map(async d => (await d.mesh.status()).peers))
    return daemons.every((d, i) => daemons.every(o => o === d || peers[i].includes(o.info.peerId)))
  }, { timeout: 20_000, interval: 100 })
  say(`all three found each other over mDNS and connected (${(performance.now() - discovering).toFixed(0)} ms after the last daemon was listening)`)

  const hit = await waitFor('the coordinator to find kira by capability', async () => {
    const found = await coordinator.mesh.find('review', { limit: 5 })
    return found.find(r => r.card.capabilities.some(c => c.name === 'review'))
  }, { timeout: 15_000, interval: 150 })
  check(hit.peerId === kira.info.peerId, 'the persona offering review is kira')
  const kiraAddrs = hit.card.addrs.map(a => a.split('/')[2])
  check(kiraAddrs.includes(kira.host.ip), `kira's card carries its LAN address ${kira.host.ip}`)
  say(`coordinator: find "review" → ${hit.name} (card addrs ${[...new Set(kiraAddrs)].join(', ')})`)

  const question = { text: 'can you review chapter 3?', from: 'coordinator on host 2' }
  const sent = await coordinator.mesh.send('kira', question, { thread: 'lan' })
  const got = await kira.mesh.inbox.wait({ from: coordinator.info.peerId, thread: 'lan', timeout: 15_000 })
  check(!got.timedOut && got.messages.length === 1 && got.messages[0].id === sent.id, 'kira received the message once')
  check(isDeepStrictEqual(got.messages[0].body, question), 'with the body as sent')
  say(`coordinator → kira (host 2 → host 1): "${question.text}" delivered`)

  const answer = { text: 'yes — sending notes tonight' }
  const reply = await kira.mesh.send(coordinator.info.peerId, answer, { thread: 'lan', replyTo: sent.id })
  await kira.mesh.inbox.ack([sent.id])
  const back = await coordinator.mesh.inbox.wait({ from: kira.info.peerId, thread: 'lan', timeout: 15_000 })
  check(!back.timedOut && back.messages.length === 1 && back.messages[0].id === reply.id && back.messages[0].replyTo === sent.id, 'the coordinator received kira\'s reply to its message')
  say(`kira → coordinator (host 1 → host 2): "${answer.text}" (replyTo ${sent.id.slice(-6)})`)

  const echoed = await aria.mesh.request(coordinator.info.peerId, 'mesh.echo', { hello: 'from host 0' }, { timeout: 5000 })
  check(echoed.hello === 'from host 0', 'aria reaches the coordinator across hosts')
  say('aria → coordinator (host 0 → host 2): mesh.echo answered')
  say('OK: three hosts, mDNS only, no bootstrap: discovered, found by capability, messaged and replied')
} catch (err) {
  failed = true
  console.error(`multi-host failed: ${err.message}`)
  for (const d of daemons) if (d.stderr !== '') console.error(`--- ${d.name} stderr:\n${d.stderr}`)
}
await cleanup()
process.exit(failed ? 1 : 0)
