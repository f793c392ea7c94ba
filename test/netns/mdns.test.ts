/**
 * Tier 4: three "machines" (network namespaces on one bridge), a real `pmesh start` daemon in
 * each with mDNS on and no bootstrap. They must find and connect to each other, answer
 * `mesh.echo` across hosts, fail with a typed error while one is partitioned, recover after a
 * short partition (connection survives) and after a long one (connections dropped by libp2p's
 * connection monitor, then re-established without any request).
 *
 * mDNS runs only inside the namespaces; this process (host namespace) only talks to the daemons
 * over their Unix control sockets, and checks that the host namespace sent no multicast.
 * Needs root; skipped loudly otherwise.
 *
 * Env: PMESH_NETNS_VERBOSE=1 prints each daemon's stderr (combine with DEBUG='persona-mesh:*');
 * PMESH_NETNS_LONG=1 adds a ~75 s partition-outlasts-the-redial-backoff case;
 * PMESH_NETNS_BIN=<path to bin.js> runs another CLI build.
 */
import { mkdtemp, readdir, rm } from 'node:fs/promises'
import { networkInterfaces, tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
// the built package: the root workspace has no link to @persona-mesh/node (see the report)
import { connectMesh } from '../../packages/node/dist/index.js'
import { createNetwork, multicastCounters, netnsAvailability, waitFor } from './harness.js'
import type { RemoteMesh } from '../../packages/node/dist/index.js'
import type { Network } from './harness.js'
import type { ChildProcess } from 'node:child_process'

const HOSTS = 3
// PMESH_NETNS_BIN: run another build of the CLI (e.g. a scratch copy with a node fix)
const BIN = process.env.PMESH_NETNS_BIN ?? resolve(fileURLToPath(import.meta.url), '../../../packages/cli/dist/bin.js')
const availability = netnsAvailability()

if (!availability.ok) {
  console.warn([
    '',
    '!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!',
    `!!! SKIPPING test/netns (multi-host, mDNS): ${availability.reason}`,
    '!!! This tier needs root and `ip netns` (iproute2); CI runs it as root.',
    '!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!',
    ''
  ].join('\n'))
}

/** Remove `pmnt-home-<pid>-*` temp dirs of runs whose process is gone (killed before afterAll). */
async function removeStaleHomes (): Promise<void> {
  for (const entry of await readdir(tmpdir()).catch(() => [] as string[])) {
    const match = /^pmnt-home-(\d+)-/.exec(entry)
    if (match === null) continue
    try {
      process.kill(Number(match[1]), 0)
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ESRCH') await rm(join(tmpdir(), entry), { recursive: true, force: true })
    }
  }
}

/** How much of each daemon's stderr to keep for diagnostics (more with PMESH_NETNS_VERBOSE). */
const STDERR_KEEP = process.env.PMESH_NETNS_VERBOSE !== undefined ? 4_000_000 : 8000

interface Daemon {
  name: string
  child: ChildProcess
  peerId: string
  multiaddrs: string[]
  mesh: RemoteMesh
  stderr: () => string
}

/** Wait for the daemon's one JSON line on stdout (bounded), keeping its stderr for diagnostics. */
async function startDaemon (network: Network, hostIndex: number, home: string): Promise<Daemon> {
  const host = network.hosts[hostIndex]
  if (host === undefined) throw new Error(`no host ${hostIndex}`)
  const name = `h${hostIndex}`
  const child = network.spawn(host.ns, [
    process.execPath, BIN, 'start', '--name', name, '--home', home, '--listen', '/ip4/0.0.0.0/tcp/0'
  ], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, PMESH_HOME: home } })
  let err = ''
  child.stderr?.setEncoding('utf8')
  child.stderr?.on('data', (chunk: string) => { err = (err + chunk).slice(-STDERR_KEEP) })
  const line = await new Promise<string>((resolveLine, reject) => {
    let out = ''
    const timer = setTimeout(() => { reject(new Error(`${name} printed nothing within 20 s; stderr:\n${err}`)) }, 20_000)
    child.stdout?.setEncoding('utf8')
    child.stdout?.on('data', (chunk: string) => {
      out += chunk
      const nl = out.indexOf('\n')
      if (nl >= 0) { clearTimeout(timer); resolveLine(out.slice(0, nl)) }
    })
    child.once('exit', (code, signal) => {
      clearTimeout(timer)
      reject(new Error(`${name} exited (${code ?? signal}) before listening; stderr:\n${err}`))
    })
  })
  const info = JSON.parse(line) as { peerId: string, name: string, multiaddrs: string[] }
  const mesh = await connectMesh({ name, home, timeout: 5000 })
  return { name, child, peerId: info.peerId, multiaddrs: info.multiaddrs, mesh, stderr: () => err }
}

async function stopDaemon (d: { name?: string, child: ChildProcess, mesh?: RemoteMesh }): Promise<void> {
  d.mesh?.close()
  const { child } = d
  if (child.exitCode !== null || child.signalCode !== null) return
  const t0 = Date.now()
  const exited = new Promise<string>(resolveExit => { child.once('exit', (code, signal) => { resolveExit(`${code ?? signal}`) }) })
  child.kill('SIGTERM')
  const timer = setTimeout(() => { child.kill('SIGKILL') }, 5000)
  // SIGKILL cannot be ignored; the second bound only guards against a wedged kernel
  const how = await Promise.race([exited, new Promise<string>(resolveWait => setTimeout(() => { resolveWait('still running') }, 10_000))])
  clearTimeout(timer)
  console.log(`netns: ${d.name ?? `pid ${child.pid}`} stopped (${how}) ${Date.now() - t0} ms after SIGTERM`)
}

describe.skipIf(!availability.ok)('multi-host: mDNS across network namespaces (tier 4)', () => {
  let network: Network | undefined
  let home = ''
  const daemons: Daemon[] = []
  const spawned: ChildProcess[] = []
  let startedAt = 0
  let listeningAt = 0
  let hostMcastBefore: { inMcastPkts: number, outMcastPkts: number } | undefined

  beforeAll(async () => {
    hostMcastBefore = await multicastCounters()
    await removeStaleHomes()
    home = await mkdtemp(join(tmpdir(), `pmnt-home-${process.pid}-`))
    network = await createNetwork({ hosts: HOSTS, prefix: 'pmnt' })
    console.log(`netns: bridge ${network.bridgeNs}, hosts ${network.hosts.map(h => `${h.ns}=${h.ip}`).join(', ')}`)
    startedAt = Date.now()
    const net = network
    const results = await Promise.allSettled(net.hosts.map(async (_, i) => {
      const d = await startDaemon(net, i, home)
      spawned.push(d.child)
      return d
    }))
    for (const r of results) if (r.status === 'fulfilled') daemons.push(r.value)
    const failed = results.find(r => r.status === 'rejected')
    if (failed !== undefined) throw (failed as PromiseRejectedResult).reason
    daemons.sort((a, b) => a.name.localeCompare(b.name))
    listeningAt = Date.now()
    console.log(`netns: ${HOSTS} daemons listening after ${listeningAt - startedAt} ms`)
  })

  afterAll(async () => {
    if (process.env.PMESH_NETNS_VERBOSE !== undefined) for (const d of daemons) console.log(`--- ${d.name} stderr:\n${d.stderr()}`)
    try {
      await Promise.allSettled(daemons.map(stopDaemon))
      // anything spawned whose startup failed half-way
      await Promise.allSettled(spawned.filter(c => !daemons.some(d => d.child === c)).map(child => stopDaemon({ child })))
    } finally {
      await network?.destroy()
      if (home !== '') await rm(home, { recursive: true, force: true })
    }
  })

  const peersOf = async (d: Daemon): Promise<string[]> => (await d.mesh.status()).peers
  const diagnostics = (): string => daemons.map(d => `--- ${d.name} stderr:\n${d.stderr()}`).join('\n')

  it('advertises only the namespace\'s own addresses, never the host namespace\'s', () => {
    const hostAddrs = Object.values(networkInterfaces()).flat()
      .flatMap(a => a !== undefined && !a.internal ? [a.address] : [])
    for (const [i, d] of daemons.entries()) {
      console.log(`netns: ${d.name} (${network?.hosts[i]?.ip}) advertises ${d.multiaddrs.join(' ')}`)
      const ips = d.multiaddrs.map(ma => ma.split('/')[2] ?? '')
      expect(ips, `${d.name} advertises its own segment address`).toContain(network?.hosts[i]?.ip)
      for (const a of hostAddrs) expect(ips, `${d.name} must not advertise host-namespace address ${a}`).not.toContain(a)
      const loopback = ips.filter(a => a.startsWith('127.'))
      if (loopback.length > 0) console.log(`netns: note: ${d.name} also advertises loopback ${loopback.join(', ')} (its own namespace's lo)`)
    }
  })

  it('all three discover each other over mDNS and connect (no bootstrap)', async () => {
    try {
      await waitFor('all 3 daemons connected to each other', async () => {
        const lists = await Promise.all(daemons.map(peersOf))
        return daemons.every((d, i) => daemons.every(o => o === d || (lists[i] ?? []).includes(o.peerId)))
      }, { timeout: 20_000, interval: 50 })
    } catch (err) {
      for (const d of daemons) console.log(`netns: ${d.name} peers: ${JSON.stringify(await peersOf(d).catch(e => String(e)))}`)
      console.log(diagnostics())
      throw err
    }
    const now = Date.now()
    console.log(`netns: all ${HOSTS} connected ${now - startedAt} ms after the daemons were spawned (${now - listeningAt} ms after the last was listening)`)
  })

  it('mesh.echo works across hosts', async () => {
    for (const from of daemons) {
      for (const to of daemons) {
        if (from === to) continue
        const body = { from: from.name, to: to.name, n: 42 }
        const t0 = performance.now()
        expect(await from.mesh.request(to.peerId, 'mesh.echo', body, { timeout: 5000 })).toEqual(body)
        console.log(`netns: echo ${from.name} -> ${to.name} ${(performance.now() - t0).toFixed(1)} ms`)
      }
    }
  })

  it('multicast stays inside the namespaces: mDNS ran there, none in the host namespace', async () => {
    const net = network as Network
    for (const h of net.hosts) {
      const c = await multicastCounters(net, h.ns)
      console.log(`netns: ${h.ns} multicast out ${c.outMcastPkts} in ${c.inMcastPkts}`)
      expect(c.outMcastPkts, `mDNS multicast sent inside ${h.ns}`).toBeGreaterThan(0)
    }
    const after = await multicastCounters()
    console.log(`netns: host namespace multicast out ${hostMcastBefore?.outMcastPkts} -> ${after.outMcastPkts}, in ${hostMcastBefore?.inMcastPkts} -> ${after.inMcastPkts}`)
    expect(after.outMcastPkts, 'no multicast sent from the host namespace').toBe(hostMcastBefore?.outMcastPkts)
  })

  it('a partitioned host is unreachable with a typed error, and reachable again after heal', async () => {
    const net = network as Network
    const [a, b, c] = daemons as [Daemon, Daemon, Daemon]
    await net.partition(2)
    let healed = false
    try {
      const t0 = performance.now()
      const err = await a.mesh.request(c.peerId, 'mesh.echo', { during: 'partition' }, {
        timeout: 3000,
        signal: AbortSignal.timeout(10_000) // a safety net only: the typed error must come first
      }).then(() => undefined, (e: Error) => e)
      console.log(`netns: request to partitioned ${c.name} failed after ${(performance.now() - t0).toFixed(0)} ms with ${err?.name}: ${err?.message}`)
      expect(err, 'a request to a partitioned host must fail').toBeInstanceOf(Error)
      expect(['TimeoutError', 'PeerUnreachableError']).toContain(err?.name)
      // the rest of the mesh is unaffected
      expect(await a.mesh.request(b.peerId, 'mesh.echo', { during: 'partition' }, { timeout: 5000 })).toEqual({ during: 'partition' })

      await net.heal(2)
      healed = true
      const t1 = Date.now()
      let attempts = 0
      await waitFor(`${a.name} -> ${c.name} echo after heal`, async () => {
        attempts++
        const res = await a.mesh.request(c.peerId, 'mesh.echo', { after: 'heal' }, { timeout: 2000, signal: AbortSignal.timeout(5000) })
        return JSON.stringify(res) === JSON.stringify({ after: 'heal' })
      }, { timeout: 30_000, interval: 100, maxAttempts: 60 })
      console.log(`netns: ${a.name} -> ${c.name} echo works again ${Date.now() - t1} ms after heal (${attempts} attempt(s))`)
      expect(await c.mesh.request(a.peerId, 'mesh.echo', { back: true }, { timeout: 5000 })).toEqual({ back: true })
    } finally {
      if (!healed) await net.heal(2).catch(() => {})
    }
  })

  it('a long partition drops the connections; after heal the mesh reconnects by itself', async () => {
    const net = network as Network
    const [a, b, c] = daemons as [Daemon, Daemon, Daemon]
    await net.partition(1)
    let healed = false
    try {
      const t0 = Date.now()
      // libp2p's connection monitor pings every 10 s and aborts connections whose ping fails
      await waitFor(`${a.name} and ${c.name} to drop ${b.name}`, async () => {
        const [pa, pc] = await Promise.all([peersOf(a), peersOf(c)])
        return !pa.includes(b.peerId) && !pc.includes(b.peerId)
      }, { timeout: 30_000, interval: 200 })
      console.log(`netns: ${b.name}'s connections dropped ${Date.now() - t0} ms into the partition`)
      await net.heal(1)
      healed = true
      const t1 = Date.now()
      await waitFor('full mesh again after heal, with no request to trigger a dial', async () => {
        const lists = await Promise.all(daemons.map(peersOf))
        return daemons.every((d, i) => daemons.every(o => o === d || (lists[i] ?? []).includes(o.peerId)))
      }, { timeout: 25_000, interval: 100 })
      console.log(`netns: full mesh again ${Date.now() - t1} ms after heal`)
      expect(await a.mesh.request(b.peerId, 'mesh.echo', { reconnected: true }, { timeout: 5000 })).toEqual({ reconnected: true })
    } finally {
      if (!healed) await net.heal(1).catch(() => {})
    }
  })

  // Opt-in (PMESH_NETNS_LONG=1, ~75 s): a partition that outlasts the peer table's redial backoff.
  // Once a peer is in the peer store, libp2p never fires `peer:discovery` for it again, so only the
  // discovery services' own `peer` events (mDNS answers every query, every 10 s) can bring it back
  // promptly. Expect the full mesh within about one mDNS interval of the heal.
  it.skipIf(process.env.PMESH_NETNS_LONG === undefined)('after a partition longer than the redial backoff, mDNS re-discovery reconnects within one query interval', async () => {
    const net = network as Network
    const [a, b, c] = daemons as [Daemon, Daemon, Daemon]
    const HOLD_MS = 40_000
    await net.partition(1)
    let healed = false
    try {
      const t0 = Date.now()
      await waitFor(`${a.name} and ${c.name} to drop ${b.name}`, async () => {
        const [pa, pc] = await Promise.all([peersOf(a), peersOf(c)])
        return !pa.includes(b.peerId) && !pc.includes(b.peerId)
      }, { timeout: 30_000, interval: 200 })
      // the scenario itself, not a wait for a condition: keep the cable out for a while
      await new Promise(resolveHold => setTimeout(resolveHold, HOLD_MS))
      console.log(`netns: ${b.name} partitioned for ${Date.now() - t0} ms`)
      await net.heal(1)
      healed = true
      const t1 = Date.now()
      await waitFor('full mesh again after a long partition', async () => {
        const lists = await Promise.all(daemons.map(peersOf))
        return daemons.every((d, i) => daemons.every(o => o === d || (lists[i] ?? []).includes(o.peerId)))
      }, { timeout: 14_000, interval: 100 })
      console.log(`netns: full mesh again ${Date.now() - t1} ms after healing a long partition`)
    } finally {
      if (!healed) await net.heal(1).catch(() => {})
    }
  }, 120_000)
})
