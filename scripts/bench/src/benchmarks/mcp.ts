/**
 * mcp: what a tool call through `pmesh mcp` costs over a direct `Mesh` call.
 *
 * A client process drives a real `pmesh mcp` stdio server (packages/cli/dist/bin.js) with the MCP
 * SDK `Client` (`StdioClientTransport`), calling `mesh_whoami` and `mesh_peers`, one call at a
 * time. Two set-ups, as Claude Code would run it:
 *  - attached: a daemon process (a mesh node serving its control socket, like `pmesh start`);
 *    `pmesh mcp` attaches to it. Baseline: the same client process calling `status()` /
 *    `peers()` on `connectMesh()` (the `Mesh` over the control socket) — what the MCP server
 *    itself does per tool call.
 *  - embedded: no daemon; `pmesh mcp` runs its own node. Baseline: `status()` / `peers()` on an
 *    in-process `MeshNode` (another process, same configuration).
 * Every mesh node has one peer (a third process) so `peers` has something to list.
 * Skipped with a note when the CLI has no `mcp` command (packages/mcp not built).
 */
import { spawnSync } from 'node:child_process'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { Figure } from '../lib/figure.js'
import { figure } from '../lib/figure.js'
import type { PhaseSamples } from '../lib/load.js'
import { runPhase } from '../lib/load.js'
import { loadMeshModule, loopbackAddr, startMeshNode, TMP_ROOT_ENV } from '../lib/mesh.js'
import type { BenchContext, Benchmark, BenchResult, RoleFactory } from '../lib/registry.js'
import { round, summarize } from '../lib/stats.js'
import type { Worker } from '../lib/workers.js'

/** `PMESH_BENCH_CLI=/path/to/bin.js` measures another build of the CLI. */
const CLI_ENV = 'PMESH_BENCH_CLI'
const DEFAULT_CLI = resolve(dirname(fileURLToPath(import.meta.url)), '../../../../packages/cli/dist/bin.js')

interface Config { warmup: number, calls: number, rounds: number, phaseCapMs: number }
const FULL: Config = { warmup: 200, calls: 2000, rounds: 2, phaseCapMs: 15_000 }
const QUICK: Config = { warmup: 50, calls: 400, rounds: 2, phaseCapMs: 5000 }

type Op = 'whoami' | 'peers'
type Mode = 'attached' | 'embedded'

interface Measured extends PhaseSamples {
  /** CPU of the other processes taking part (MCP server, daemon), µs. */
  otherCpuUs: number
}

function cliPath (): string {
  const v = process.env[CLI_ENV]
  return v === undefined || v === '' ? DEFAULT_CLI : resolve(v)
}

/** Does this CLI build have `pmesh mcp`? */
function mcpAvailable (bin: string): string | undefined {
  const out = spawnSync(process.execPath, [bin, 'mcp', '--help'], { encoding: 'utf8', timeout: 20_000 })
  if (out.error !== undefined) return `cannot run ${bin}: ${out.error.message}`
  if (out.status !== 0 || !/pmesh mcp/.test(out.stdout)) return `${bin} has no \`mcp\` command yet (packages/mcp not built?)`
  return undefined
}

/** user+system CPU of a process from /proc, µs (Linux; NaN elsewhere). */
async function procCpuUs (pid: number | null | undefined): Promise<number> {
  if (pid === null || pid === undefined) return Number.NaN
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8')
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    return (Number(fields[11]) + Number(fields[12])) * 1e6 / 100 // utime, stime in clock ticks (USER_HZ = 100)
  } catch {
    return Number.NaN
  }
}

async function run (ctx: BenchContext): Promise<BenchResult> {
  const cfg = ctx.quick ? QUICK : FULL
  const bin = cliPath()
  const missing = mcpAvailable(bin)
  if (missing !== undefined) {
    ctx.log(`skipped: ${missing}`)
    return { title: 'MCP tool-call overhead (skipped)', baseline: 'a direct Mesh call', config: { cli: bin }, figures: {}, details: { skipped: missing }, notes: [`skipped: ${missing}`] }
  }
  ctx.log('starting a peer, a daemon, the direct baseline and two MCP clients (each spawning pmesh mcp)')
  const peer = await ctx.spawn('peer')
  const daemon = await ctx.spawn('daemon', { peer: peer.ready.multiaddr })
  const direct = await ctx.spawn('direct', { peer: peer.ready.multiaddr })
  const attached = await ctx.spawn('client', { bin, mode: 'attached', name: daemon.ready.name, home: daemon.ready.home }, { readyTimeoutMs: 60_000 })
  const embedded = await ctx.spawn('client', { bin, mode: 'embedded', peer: peer.ready.multiaddr }, { readyTimeoutMs: 60_000 })

  // who does what: [worker, method] for the MCP side and the baseline, per mode
  const sides: Record<Mode, { mcp: Worker, base: Worker, baseMethod: string, others: Worker[] }> = {
    attached: { mcp: attached, base: attached, baseMethod: 'direct', others: [daemon] },
    embedded: { mcp: embedded, base: direct, baseMethod: 'direct', others: [] }
  }
  const phase = async (w: Worker, method: string, op: Op, count: number, others: Worker[]): Promise<Measured> => {
    if (ctx.signal.aborted) throw new Error('interrupted')
    const before = await Promise.all(others.map(async o => (await o.usage()).cpuUs))
    const s = await w.call<PhaseSamples & { serverCpuUs?: number }>(method, { op, count, maxMs: cfg.phaseCapMs }, cfg.phaseCapMs + 30_000)
    const after = await Promise.all(others.map(async o => (await o.usage()).cpuUs))
    return { ...s, otherCpuUs: after.reduce((a, b, i) => a + b - before[i], 0) + (s.serverCpuUs ?? 0) }
  }

  const res: Record<string, Measured[]> = {}
  const push = (key: string, m: Measured): void => {
    res[key] ??= []
    res[key].push(m)
  }
  for (const mode of ['attached', 'embedded'] as const) {
    const s = sides[mode]
    for (const op of ['whoami', 'peers'] as const) {
      await phase(s.mcp, 'mcp', op, cfg.warmup, [])
      await phase(s.base, s.baseMethod, op, cfg.warmup, [])
    }
  }
  const per = Math.ceil(cfg.calls / cfg.rounds)
  for (let r = 0; r < cfg.rounds; r++) {
    ctx.log(`round ${r + 1}/${cfg.rounds}: ${per} calls of each, one at a time`)
    for (const mode of ['attached', 'embedded'] as const) {
      const s = sides[mode]
      for (const op of ['whoami', 'peers'] as const) {
        const order = r % 2 === 0 ? ['base', 'mcp'] : ['mcp', 'base']
        for (const side of order) {
          if (side === 'mcp') push(`${mode}:${op}:mcp`, await phase(s.mcp, 'mcp', op, per, s.others))
          else push(`${mode}:${op}:base`, await phase(s.base, s.baseMethod, op, per, s.others))
        }
      }
    }
  }
  const connect = { attached: attached.ready.connectMs as number, embedded: embedded.ready.connectMs as number }

  const merge = (parts: Measured[]) => {
    const completed = parts.reduce((n, p) => n + p.completed, 0)
    const cpu = parts.reduce((n, p) => n + p.cpuUs + p.otherCpuUs, 0)
    return { completed, summary: summarize(parts.flatMap(p => p.latencies)), cpuUsPerCall: cpu / completed }
  }
  const figures: Record<string, Figure> = {}
  const details: Record<string, unknown> = { cli: bin, connectMs: { attached: round(connect.attached), embedded: round(connect.embedded) } }
  const baseName: Record<Mode, string> = { attached: 'connectMesh() over the control socket', embedded: 'in-process MeshNode' }
  const direct2: Record<Op, string> = { whoami: 'status()', peers: 'peers()' }
  for (const mode of ['attached', 'embedded'] as const) {
    for (const op of ['whoami', 'peers'] as const) {
      const m = merge(res[`${mode}:${op}:mcp`])
      const b = merge(res[`${mode}:${op}:base`])
      const p50s = (k: string) => res[k].map(x => merge([x]).summary.p50)
      figures[`${mode}_${op}_p50_ms`] = figure({ label: `${mode}: mesh_${op} via pmesh mcp, p50 (baseline: ${direct2[op]} on ${baseName[mode]})`, unit: 'ms', better: 'lower', value: m.summary.p50, baseline: b.summary.p50, roundValues: p50s(`${mode}:${op}:mcp`), roundBaselines: p50s(`${mode}:${op}:base`) })
      figures[`${mode}_${op}_p95_ms`] = figure({ label: `${mode}: mesh_${op} via pmesh mcp, p95`, unit: 'ms', better: 'lower', value: m.summary.p95, baseline: b.summary.p95 })
      if (op === 'whoami') figures[`${mode}_${op}_cpu_us`] = figure({ label: `${mode}: mesh_${op} CPU per call, every process involved`, unit: 'µs', better: 'lower', value: m.cpuUsPerCall, baseline: b.cpuUsPerCall })
      details[`${mode}_${op}`] = { mcp: { completed: m.completed, latencyMs: Object.fromEntries(Object.entries(m.summary).map(([k, v]) => [k, round(v)])) }, direct: { completed: b.completed, latencyMs: Object.fromEntries(Object.entries(b.summary).map(([k, v]) => [k, round(v)])) } }
    }
  }
  return {
    title: 'MCP tool-call overhead: the SDK Client driving `pmesh mcp` over stdio vs a direct Mesh call',
    baseline: 'attached: status()/peers() on connectMesh() (control socket) in the client process; embedded: status()/peers() on an in-process MeshNode',
    config: { ...cfg, cli: bin },
    figures,
    details,
    notes: [
      'placement: peer, daemon, direct-baseline and two MCP-client processes; each client spawns its own `pmesh mcp` child (CPU read from /proc)',
      `spawn + MCP initialize: attached ${round(connect.attached)} ms, embedded ${round(connect.embedded)} ms (embedded includes starting a node)`
    ]
  }
}

export const benchmark: Benchmark = {
  name: 'mcp',
  description: 'pmesh mcp tool calls (mesh_whoami, mesh_peers) vs a direct Mesh call',
  run
}

async function waitUntil (what: string, check: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs
  for (let i = 0; i < 10_000; i++) {
    if (await check()) return
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise(resolve => setTimeout(resolve, 25))
  }
}

export const roles: Record<string, RoleFactory> = {
  peer: async () => {
    const { node, close } = await startMeshNode('bench-mcp-peer', { card: { description: 'a peer to list', capabilities: [{ name: 'bench-peer' }] } })
    return { ready: { multiaddr: loopbackAddr(node.multiaddrs) }, methods: {}, close }
  },

  /** A daemon like `pmesh start`: a mesh node serving its control socket. */
  daemon: async (args: { peer: string }) => {
    const { createMeshNode, serveControl, CONTROL_SOCKET } = await loadMeshModule()
    const home = await mkdtemp(join(process.env[TMP_ROOT_ENV] || tmpdir(), 'pmesh-bench-daemon-'))
    const name = 'bench-daemon'
    const node = await createMeshNode({ name, home, listen: ['/ip4/127.0.0.1/tcp/0'], mdns: false })
    const control = await serveControl(node, join(node.dataDir, CONTROL_SOCKET))
    await node.dial(args.peer)
    await waitUntil('the peer\'s card', async () => (await node.peers()).length > 0, 10_000)
    return {
      ready: { name, home },
      methods: {},
      close: async () => {
        await control.close()
        await node.stop()
        await rm(home, { recursive: true, force: true })
      }
    }
  },

  /** Baseline of the embedded set-up: the same calls on an in-process node. */
  direct: async (args: { peer: string }) => {
    const { node, close } = await startMeshNode('bench-mcp-direct')
    await node.dial(args.peer)
    await waitUntil('the peer\'s card', async () => (await node.peers()).length > 0, 10_000)
    const calls: Record<Op, () => Promise<unknown>> = { whoami: async () => await node.status(), peers: async () => await node.peers() }
    return {
      methods: { direct: async (p: { op: Op, count: number, maxMs: number }) => await runPhase(calls[p.op], p) },
      close
    }
  },

  /** The MCP SDK client driving `pmesh mcp` (attached to the daemon, or embedded); attached also measures connectMesh() directly. */
  client: async (args: { bin: string, mode: Mode, name?: string, home?: string, peer?: string }) => {
    await import('@persona-mesh/node/polyfill')
    const { Client } = await import('@modelcontextprotocol/sdk/client/index.js')
    const { StdioClientTransport } = await import('@modelcontextprotocol/sdk/client/stdio.js')
    let home = args.home
    let ownHome: string | undefined
    if (args.mode === 'embedded') {
      ownHome = await mkdtemp(join(process.env[TMP_ROOT_ENV] || tmpdir(), 'pmesh-bench-mcp-'))
      home = ownHome
    }
    const name = args.name ?? 'bench-mcp-embedded'
    const argv = [args.bin, 'mcp', '--name', name, '--home', home!]
    if (args.mode === 'embedded') argv.push('--no-mdns', '--listen', '/ip4/127.0.0.1/tcp/0', '--bootstrap', args.peer!)
    const t0 = performance.now()
    const transport = new StdioClientTransport({ command: process.execPath, args: argv, stderr: 'pipe', env: { ...process.env, NODE_OPTIONS: '' } as Record<string, string> })
    let stderrTail = ''
    transport.stderr?.on('data', (chunk: Buffer) => { stderrTail = (stderrTail + chunk.toString()).slice(-4000) })
    const client = new Client({ name: 'persona-mesh-bench', version: '0.1.0' })
    try {
      await client.connect(transport, { timeout: 30_000 })
    } catch (err) {
      throw new Error(`pmesh mcp did not start: ${(err as Error).message}\n${stderrTail}`)
    }
    const connectMs = performance.now() - t0
    const tool = async (name: string): Promise<any> => {
      const out = await client.callTool({ name, arguments: {} }, undefined, { timeout: 10_000 })
      if (out.isError === true) throw new Error(`${name} failed: ${JSON.stringify(out.content).slice(0, 200)}`)
      return out
    }
    if (args.mode === 'embedded') {
      await waitUntil('mesh_peers to list the peer', async () => ((await tool('mesh_peers')).structuredContent?.total ?? 0) > 0, 20_000)
    }
    const remote = args.mode === 'attached' ? await (await loadMeshModule()).connectMesh({ name, home: home! }) : undefined
    const mcpCalls: Record<Op, () => Promise<unknown>> = { whoami: async () => await tool('mesh_whoami'), peers: async () => await tool('mesh_peers') }
    return {
      ready: { connectMs },
      methods: {
        mcp: async (p: { op: Op, count: number, maxMs: number }) => {
          const cpu0 = await procCpuUs(transport.pid)
          const s = await runPhase(mcpCalls[p.op], p)
          return { ...s, serverCpuUs: await procCpuUs(transport.pid) - cpu0 }
        },
        direct: async (p: { op: Op, count: number, maxMs: number }) => {
          if (remote === undefined) throw new Error('no direct baseline in embedded mode here')
          const calls: Record<Op, () => Promise<unknown>> = { whoami: async () => await remote.status(), peers: async () => await remote.peers() }
          return await runPhase(calls[p.op], p)
        }
      },
      close: async () => {
        remote?.close()
        await client.close().catch(() => {})
        if (ownHome !== undefined) await rm(ownHome, { recursive: true, force: true })
      }
    }
  }
}
