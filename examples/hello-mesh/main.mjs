// Two personas, two processes, one request: the smallest honest story of the mesh.
// Self-verifying: exits non-zero if any step fails. mDNS stays off (127.0.0.1 only).
import { spawn } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { connectMesh } from '@persona-mesh/node'

const pmesh = fileURLToPath(import.meta.resolve('@persona-mesh/cli/bin'))
const home = await mkdtemp(join(tmpdir(), 'pmesh-demo-'))
const children = []
const t0 = performance.now()
const say = (line) => console.log(`[${((performance.now() - t0) / 1000).toFixed(2)}s] ${line}`)

async function start (name, extra = []) {
  const child = spawn(process.execPath, [pmesh, 'start', '--name', name, '--home', home, '--listen', '/ip4/127.0.0.1/tcp/0', '--no-mdns', ...extra], { stdio: ['ignore', 'pipe', 'inherit'] })
  children.push(child)
  const line = await new Promise((resolve, reject) => {
    createInterface({ input: child.stdout }).once('line', resolve)
    child.once('exit', code => reject(new Error(`${name} exited with ${code}`)))
  })
  return JSON.parse(line)
}

let failed = false
try {
  say('starting persona aria')
  const aria = await start('aria')
  say(`aria is ${aria.peerId} on ${aria.multiaddrs[0]}`)
  say('starting persona kira, bootstrapping from aria')
  const kira = await start('kira', ['--bootstrap', aria.multiaddrs[0]])
  say(`kira is ${kira.peerId}`)

  const mesh = await connectMesh({ name: 'kira', home })
  try {
    const body = { text: 'hello from kira', at: Date.now() }
    const t = performance.now()
    const answer = await mesh.request(aria.peerId, 'mesh.echo', body, { timeout: 10_000 })
    if (JSON.stringify(answer) !== JSON.stringify(body)) throw new Error(`aria answered ${JSON.stringify(answer)}`)
    say(`kira -> aria mesh.echo answered in ${(performance.now() - t).toFixed(1)} ms: ${JSON.stringify(answer)}`)
    const status = await mesh.status()
    if (!status.peers.includes(aria.peerId)) throw new Error('kira does not list aria as a peer')
    say(`kira is connected to ${status.peers.length} peer(s)`)
  } finally {
    mesh.close()
  }
  say('OK: two personas found each other and answered a request')
} catch (err) {
  failed = true
  console.error(`demo failed: ${err.stack ?? err}`)
} finally {
  await Promise.all(children.map(child => new Promise((resolve) => {
    if (child.exitCode !== null) return resolve()
    child.once('exit', resolve)
    child.kill('SIGTERM')
    setTimeout(() => child.kill('SIGKILL'), 5000).unref()
  })))
  await rm(home, { recursive: true, force: true })
}
process.exit(failed ? 1 : 0)
