/**
 * `pnpm bench [name...] [--quick] [--cpu-prof]` — run benchmarks, each figure beside a raw
 * libp2p baseline measured in the same run on the same machine.
 *
 * Output: stdout carries exactly one line, a JSON document (`schema: persona-mesh-bench/1`);
 * the same document per benchmark is written to `<repo>/.bench/<name>-<timestamp>.json`.
 * Progress and a readable table go to stderr. Exit code 1 if any benchmark failed.
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { mkdir, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { BENCHMARKS } from './benchmarks/index.js'
import { machineInfo } from './lib/machine.js'
import { meshModuleOverride, TMP_ROOT_ENV } from './lib/mesh.js'
import type { BenchContext, BenchmarkModule, BenchResult } from './lib/registry.js'
import { renderTable } from './lib/table.js'
import { closeAllWorkers, killAllWorkers, Worker } from './lib/workers.js'

const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../../..')
const OUT_DIR = join(REPO_ROOT, '.bench')
const SCHEMA = 'persona-mesh-bench/1'

const USAGE = `usage: pnpm bench [name...] [--quick] [--cpu-prof] [--list]
  name        one of: ${BENCHMARKS.join(', ')} (default: all)
  --quick     smaller counts, for a smoke run
  --cpu-prof  write V8 CPU profiles of every worker to .bench/prof-<timestamp>/
  --list      list the benchmarks and exit
stdout: one line of JSON; .bench/<name>-<timestamp>.json: the same per benchmark; stderr: table`

interface Options { names: string[], quick: boolean, cpuProf: boolean }

function parseArgs (argv: string[]): Options | undefined {
  const opts: Options = { names: [], quick: false, cpuProf: false }
  for (const a of argv) {
    if (a === '--quick') opts.quick = true
    else if (a === '--cpu-prof') opts.cpuProf = true
    else if (a === '--list') {
      process.stderr.write(BENCHMARKS.join('\n') + '\n')
      return undefined
    } else if (a === '--help' || a === '-h') {
      process.stderr.write(USAGE + '\n')
      return undefined
    } else if ((BENCHMARKS as readonly string[]).includes(a)) opts.names.push(a)
    else throw new Error(`unknown benchmark or option ${JSON.stringify(a)}\n${USAGE}`)
  }
  if (opts.names.length === 0) opts.names = [...BENCHMARKS]
  return opts
}

function stamp (d: Date): string {
  return d.toISOString().replace(/[:.]/g, '-')
}

const interrupt = new AbortController()
let interrupted = false

function installCleanup (): void {
  // workers keep their data under one directory per run, removed here whatever happened to them
  const tmpRoot = mkdtempSync(join(tmpdir(), 'pmesh-bench-'))
  process.env[TMP_ROOT_ENV] = tmpRoot
  // last resort: no worker outlives this process
  process.on('exit', () => {
    killAllWorkers()
    rmSync(tmpRoot, { recursive: true, force: true })
  })
  const onSignal = (signal: NodeJS.Signals): void => {
    if (interrupted) {
      killAllWorkers()
      process.exit(130)
    }
    interrupted = true
    process.stderr.write(`\n${signal}: stopping workers\n`)
    interrupt.abort(new Error(signal))
    const force = setTimeout(() => { killAllWorkers(); process.exit(130) }, 3000)
    force.unref()
    void closeAllWorkers(2000).finally(() => { process.exit(130) })
  }
  process.on('SIGINT', onSignal)
  process.on('SIGTERM', onSignal)
}

/** `PMESH_BENCH_NODE_FLAGS`: Node flags for every worker, mesh and baseline alike (e.g. GC tuning). */
const WORKER_NODE_FLAGS = (process.env.PMESH_BENCH_NODE_FLAGS ?? '').split(/\s+/).filter(f => f !== '')

async function runOne (name: string, opts: Options, profDir: string | undefined): Promise<BenchResult> {
  const mod = await import(`./benchmarks/${name}.js`) as BenchmarkModule
  const workers: Worker[] = []
  const spawned = new Map<string, number>()
  const ctx: BenchContext = {
    quick: opts.quick,
    signal: interrupt.signal,
    spawn: async (role, args, options = {}) => {
      if (interrupt.signal.aborted) throw new Error('interrupted')
      const nodeArgs = [...WORKER_NODE_FLAGS, ...(options.nodeArgs ?? [])]
      // a role started again (a restarted receiver) gets its own profile: -2, -3, …
      const n = (spawned.get(role) ?? 0) + 1
      spawned.set(role, n)
      if (profDir !== undefined) nodeArgs.push('--cpu-prof', `--cpu-prof-dir=${profDir}`, `--cpu-prof-name=${name}-${role}${n > 1 ? `-${n}` : ''}.cpuprofile`)
      const w = await Worker.start(name, role, args, { ...options, nodeArgs })
      workers.push(w)
      return w
    },
    log: (message) => { process.stderr.write(`[${name}] ${message}\n`) }
  }
  try {
    return await mod.benchmark.run(ctx)
  } finally {
    await Promise.all(workers.map(async w => { await w.close() }))
  }
}

async function main (): Promise<number> {
  const opts = parseArgs(process.argv.slice(2))
  if (opts === undefined) return 0
  installCleanup()
  const startedAt = new Date()
  const machine = machineInfo(REPO_ROOT)
  const meshModule = meshModuleOverride()
  if (meshModule !== undefined) process.stderr.write(`measuring the mesh from ${meshModule}\n`)
  const profDir = opts.cpuProf ? join(OUT_DIR, `prof-${stamp(startedAt)}`) : undefined
  if (profDir !== undefined) await mkdir(profDir, { recursive: true })
  await mkdir(OUT_DIR, { recursive: true })

  const results: Record<string, BenchResult | { error: string }> = {}
  let failed = false
  for (const name of opts.names) {
    if (interrupt.signal.aborted) break
    const t0 = Date.now()
    process.stderr.write(`\n== ${name} ==\n`)
    try {
      const result = await runOne(name, opts, profDir)
      results[name] = result
      process.stderr.write(`\n${renderTable(name, result)}\n(${((Date.now() - t0) / 1000).toFixed(1)} s)\n`)
    } catch (err) {
      failed = true
      results[name] = { error: (err as Error).message }
      process.stderr.write(`[${name}] FAILED: ${(err as Error).stack ?? err}\n`)
    }
    const doc = { schema: SCHEMA, startedAt: startedAt.toISOString(), quick: opts.quick, meshModule, workerNodeFlags: WORKER_NODE_FLAGS, machine, results: { [name]: results[name] } }
    const file = join(OUT_DIR, `${name}-${stamp(startedAt)}.json`)
    await writeFile(file, JSON.stringify(doc, null, 2) + '\n')
    process.stderr.write(`written ${file}\n`)
  }
  if (profDir !== undefined) process.stderr.write(`CPU profiles in ${profDir}\n`)
  // several benchmarks: every table again, together, at the end
  if (opts.names.length > 1) {
    process.stderr.write(`\n== summary (${((Date.now() - startedAt.getTime()) / 1000).toFixed(0)} s) ==\n`)
    for (const [name, result] of Object.entries(results)) {
      process.stderr.write('error' in result ? `\n${name}: FAILED: ${result.error}\n` : `\n${renderTable(name, result)}\n`)
    }
  }
  process.stdout.write(JSON.stringify({ schema: SCHEMA, startedAt: startedAt.toISOString(), quick: opts.quick, meshModule, workerNodeFlags: WORKER_NODE_FLAGS, machine, results }) + '\n')
  return failed || interrupted ? 1 : 0
}

main().then(
  (code) => { process.exitCode = code },
  (err) => {
    process.stderr.write(`${(err as Error).message}\n`)
    killAllWorkers()
    process.exitCode = 2
  }
)
