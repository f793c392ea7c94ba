/**
 * Tier 4 (multi-host) harness: every "machine" is a Linux network namespace.
 *
 * Topology, all of it inside namespaces this module creates (nothing touches the host's
 * interfaces, addresses or routes):
 *
 *   <prefix>-<pid>-br   bridge namespace: bridge `br0` (multicast snooping off), ports p0..pN-1
 *   <prefix>-<pid>-hI   host namespace I: `lo` up, `eth0` (veth peer of pI) = <subnet>.<10+I>/24,
 *                       route 224.0.0.0/4 dev eth0, IPv6 off, no default route
 *
 * Each veth pair is created directly across the two namespaces (`ip -n BR link add pI type veth
 * peer name eth0 netns HI`), so no interface ever exists in the host namespace. The host namespace
 * gets no address in the subnet and no route to it: traffic stays between these namespaces.
 *
 * Partition = the bridge-side veth port `pI` is set down ("cable pulled": host I loses carrier and
 * every packet either way is dropped; its address and routes stay). `tc netem` is not used: the
 * kernel here has no sch_netem. Heal = the port is set up again.
 *
 * Namespace names carry the creating process's PID; `cleanupLeftovers(prefix)` removes the
 * namespaces (and kills the processes inside them) of runs whose process is gone, so two runs
 * at once never tear down each other's networks.
 */
import { execFile, execFileSync, spawn } from 'node:child_process'
import { readFile } from 'node:fs/promises'
import { promisify } from 'node:util'
import type { ChildProcess, SpawnOptions } from 'node:child_process'

const execFileP = promisify(execFile)

/** Every `ip`/`sh` command the harness runs is bounded by this. */
const CMD_TIMEOUT_MS = 10_000
const MAX_HOSTS = 50

export interface NetHost {
  /** Index of the host (0-based). */
  index: number
  /** The host's network namespace. */
  ns: string
  /** Its address on the shared segment. */
  ip: string
  /** Its interface on the segment (inside `ns`). */
  iface: string
  /** The bridge port (inside the bridge namespace) its cable is plugged into. */
  bridgePort: string
}

export interface Network {
  readonly prefix: string
  readonly bridgeNs: string
  /** e.g. '10.211.0.0/24' */
  readonly subnet: string
  readonly hosts: NetHost[]
  /** Run a command inside a namespace: argv array, or a string run with `sh -c`. */
  exec(ns: string, cmd: string[] | string): Promise<{ stdout: string, stderr: string }>
  /** Start a long-running process inside a namespace (its PID is the command's own: `ip netns exec` execs). */
  spawn(ns: string, argv: string[], options?: SpawnOptions): ChildProcess
  /** Cut a host off the segment (bridge port down). */
  partition(host: NetHost | number): Promise<void>
  /** Plug it back in. */
  heal(host: NetHost | number): Promise<void>
  /** Kill whatever still runs in the namespaces, then delete them. Idempotent; never throws. */
  destroy(): Promise<void>
}

export interface CreateNetworkOptions {
  hosts: number
  /** Namespace name prefix; the PID is appended. @default 'pmnt' */
  prefix?: string
  /** First three octets of the /24 used inside the namespaces. @default '10.211.0' */
  subnet24?: string
}

/** True when this process runs as root. */
export function isRoot (): boolean {
  return typeof process.getuid === 'function' && process.getuid() === 0
}

/**
 * Whether the netns tier can run here: root, an `ip` with netns support, and the kernel lets us
 * create (and delete) a namespace. Synchronous, so it can feed `describe.skipIf`.
 */
export function netnsAvailability (): { ok: true } | { ok: false, reason: string } {
  if (process.platform !== 'linux') return { ok: false, reason: `platform is ${process.platform}, not linux` }
  if (!isRoot()) return { ok: false, reason: 'not running as root (network namespaces need root)' }
  try {
    execFileSync('ip', ['netns', 'list'], { stdio: 'pipe', timeout: CMD_TIMEOUT_MS })
  } catch (err) {
    return { ok: false, reason: `\`ip netns\` unavailable (apt-get install -y iproute2): ${(err as Error).message}` }
  }
  const probe = `pmnt-${process.pid}-probe` // matched by cleanupLeftovers('pmnt') if we die here
  try {
    execFileSync('ip', ['netns', 'add', probe], { stdio: 'pipe', timeout: CMD_TIMEOUT_MS })
  } catch (err) {
    return { ok: false, reason: `cannot create a network namespace: ${(err as Error).message}` }
  } finally {
    try { execFileSync('ip', ['netns', 'del', probe], { stdio: 'pipe', timeout: CMD_TIMEOUT_MS }) } catch {}
  }
  return { ok: true }
}

function listNamespaces (): string[] {
  try {
    const out = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8', stdio: 'pipe', timeout: CMD_TIMEOUT_MS })
    return out.split('\n').map(line => line.trim().split(/\s+/)[0] ?? '').filter(name => name !== '')
  } catch {
    return []
  }
}

function pidAlive (pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'
  }
}

/** SIGKILL every process in the namespace, then delete it. Synchronous (usable from an exit hook). */
function deleteNamespaceSync (ns: string): void {
  try {
    const pids = execFileSync('ip', ['netns', 'pids', ns], { encoding: 'utf8', stdio: 'pipe', timeout: CMD_TIMEOUT_MS })
    for (const pid of pids.split(/\s+/).filter(p => /^\d+$/.test(p)).map(Number)) {
      if (pid === process.pid) continue
      try { process.kill(pid, 'SIGKILL') } catch {}
    }
  } catch {}
  try { execFileSync('ip', ['netns', 'del', ns], { stdio: 'pipe', timeout: CMD_TIMEOUT_MS }) } catch {}
}

/**
 * Remove namespaces `<prefix>-<pid>-*` left behind by runs whose process has died (a crash,
 * a kill -9). Namespaces of live runs are left alone. Returns the names removed.
 */
export function cleanupLeftovers (prefix = 'pmnt'): string[] {
  const pattern = new RegExp(`^${prefix.replace(/[^a-zA-Z0-9_-]/g, '')}-(\\d+)-`)
  const removed: string[] = []
  for (const ns of listNamespaces()) {
    const match = pattern.exec(ns)
    if (match === null) continue
    const pid = Number(match[1])
    if (pid === process.pid || pidAlive(pid)) continue
    deleteNamespaceSync(ns)
    removed.push(ns)
  }
  return removed
}

async function run (argv: string[]): Promise<{ stdout: string, stderr: string }> {
  const [file, ...args] = argv
  try {
    return await execFileP(file as string, args, { timeout: CMD_TIMEOUT_MS, encoding: 'utf8' })
  } catch (err) {
    const e = err as Error & { stderr?: string }
    throw new Error(`${argv.join(' ')} failed: ${e.stderr?.trim() !== undefined && e.stderr.trim() !== '' ? e.stderr.trim() : e.message}`)
  }
}

/** Build the bridge namespace and N host namespaces. On any failure everything created so far is removed. */
export async function createNetwork (options: CreateNetworkOptions): Promise<Network> {
  const count = options.hosts
  if (!Number.isInteger(count) || count < 1 || count > MAX_HOSTS) throw new Error(`hosts must be 1..${MAX_HOSTS}`)
  const basePrefix = (options.prefix ?? 'pmnt').replace(/[^a-zA-Z0-9_-]/g, '')
  const subnet24 = options.subnet24 ?? '10.211.0'
  if (!/^10\.\d{1,3}\.\d{1,3}$/.test(subnet24)) throw new Error('subnet24 must be a private 10.x.y prefix')
  cleanupLeftovers(basePrefix)

  const prefix = `${basePrefix}-${process.pid}`
  const bridgeNs = `${prefix}-br`
  const hosts: NetHost[] = Array.from({ length: count }, (_, i) => ({
    index: i,
    ns: `${prefix}-h${i}`,
    ip: `${subnet24}.${10 + i}`,
    iface: 'eth0',
    bridgePort: `p${i}`
  }))
  const created: string[] = []
  let destroyed = false

  const destroySync = (): void => {
    if (destroyed) return
    destroyed = true
    process.removeListener('exit', destroySync)
    // hosts first (kills their processes), the bridge last
    for (const ns of [...created].reverse()) deleteNamespaceSync(ns)
    created.length = 0
  }
  // last resort if the process exits without afterAll running
  process.once('exit', destroySync)

  const ip = async (...args: string[]): Promise<void> => { await run(['ip', ...args]) }
  const sysctl = async (ns: string, key: string, value: string): Promise<void> => {
    await run(['ip', 'netns', 'exec', ns, 'sysctl', '-q', '-w', `${key}=${value}`])
  }

  try {
    for (const ns of [bridgeNs, ...hosts.map(h => h.ns)]) {
      await ip('netns', 'add', ns)
      created.push(ns)
    }
    await ip('-n', bridgeNs, 'link', 'set', 'lo', 'up')
    await ip('-n', bridgeNs, 'link', 'add', 'br0', 'type', 'bridge', 'mcast_snooping', '0', 'stp_state', '0')
    await ip('-n', bridgeNs, 'link', 'set', 'br0', 'up')
    for (const h of hosts) {
      await sysctl(h.ns, 'net.ipv6.conf.all.disable_ipv6', '1')
      await sysctl(h.ns, 'net.ipv6.conf.default.disable_ipv6', '1')
      // the veth pair is born across the two namespaces: it never appears in the host namespace
      await ip('-n', bridgeNs, 'link', 'add', h.bridgePort, 'type', 'veth', 'peer', 'name', h.iface, 'netns', h.ns)
      await ip('-n', bridgeNs, 'link', 'set', h.bridgePort, 'master', 'br0')
      await ip('-n', bridgeNs, 'link', 'set', h.bridgePort, 'up')
      await ip('-n', h.ns, 'link', 'set', 'lo', 'up')
      await ip('-n', h.ns, 'addr', 'add', `${h.ip}/24`, 'dev', h.iface)
      await ip('-n', h.ns, 'link', 'set', h.iface, 'up')
      await ip('-n', h.ns, 'route', 'add', '224.0.0.0/4', 'dev', h.iface)
    }
  } catch (err) {
    destroySync()
    throw err
  }

  const hostOf = (host: NetHost | number): NetHost => {
    const h = typeof host === 'number' ? hosts[host] : hosts.find(x => x.ns === host.ns)
    if (h === undefined) throw new Error(`no such host: ${typeof host === 'number' ? host : host.ns}`)
    return h
  }
  const own = (ns: string): void => {
    if (!created.includes(ns)) throw new Error(`namespace ${ns} is not part of this network`)
  }

  return {
    prefix,
    bridgeNs,
    subnet: `${subnet24}.0/24`,
    hosts,
    async exec (ns, cmd) {
      own(ns)
      const argv = typeof cmd === 'string' ? ['sh', '-c', cmd] : cmd
      return run(['ip', 'netns', 'exec', ns, ...argv])
    },
    spawn (ns, argv, spawnOptions = {}) {
      own(ns)
      return spawn('ip', ['netns', 'exec', ns, ...argv], spawnOptions)
    },
    async partition (host) {
      const h = hostOf(host)
      await ip('-n', bridgeNs, 'link', 'set', h.bridgePort, 'down')
    },
    async heal (host) {
      const h = hostOf(host)
      await ip('-n', bridgeNs, 'link', 'set', h.bridgePort, 'up')
    },
    async destroy () {
      destroySync()
    }
  }
}

/**
 * IP multicast packet counters (IpExt InMcastPkts/OutMcastPkts) of a namespace; without `ns`, of
 * this process's own namespace (the host namespace when the tests run normally).
 */
export async function multicastCounters (network?: Network, ns?: string): Promise<{ inMcastPkts: number, outMcastPkts: number }> {
  const text = ns === undefined || network === undefined
    ? await readFile('/proc/self/net/netstat', 'utf8')
    : (await network.exec(ns, ['cat', '/proc/net/netstat'])).stdout
  const lines = text.split('\n').filter(l => l.startsWith('IpExt:'))
  const names = (lines[0] ?? '').split(/\s+/)
  const values = (lines[1] ?? '').split(/\s+/)
  const get = (key: string): number => {
    const i = names.indexOf(key)
    if (i < 0) throw new Error(`IpExt ${key} not found in /proc/net/netstat`)
    return Number(values[i])
  }
  return { inMcastPkts: get('InMcastPkts'), outMcastPkts: get('OutMcastPkts') }
}

/** Poll `check` until it returns a truthy value; bounded in time and in attempts. Never a fixed sleep. */
export async function waitFor<T> (
  what: string,
  check: () => Promise<T | undefined | false> | T | undefined | false,
  { timeout = 20_000, interval = 100, maxAttempts = 10_000 }: { timeout?: number, interval?: number, maxAttempts?: number } = {}
): Promise<T> {
  const deadline = Date.now() + timeout
  let lastError: unknown
  for (let attempt = 0; attempt < maxAttempts && Date.now() < deadline; attempt++) {
    try {
      const value = await check()
      if (value !== undefined && value !== false) return value
    } catch (err) {
      lastError = err
    }
    await new Promise(resolve => setTimeout(resolve, Math.max(0, Math.min(interval, deadline - Date.now()))))
  }
  const suffix = lastError !== undefined ? ` (last error: ${(lastError as Error).message ?? String(lastError)})` : ''
  throw new Error(`timed out after ${timeout} ms waiting for ${what}${suffix}`)
}
