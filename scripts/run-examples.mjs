#!/usr/bin/env node
// Run every example (examples/*/main.mjs), one after the other, each bounded by a timeout; print
// each one's output, a summary table and the line `N passed, N failed, N skipped`. Exits 1 if any
// example failed (non-zero exit or timeout). An example that prints a line starting with `SKIP:`
// and exits 0 counts as skipped (e.g. multi-host when not root).
//
//   node scripts/run-examples.mjs                     all examples
//   node scripts/run-examples.mjs three-personas ...  only these
//   node scripts/run-examples.mjs --timeout 90        per-example timeout in seconds (default 120)
//
// Needs the packages built (`pnpm build`; `pnpm test` does it). On a timeout the example gets
// SIGINT (its own cleanup runs), then SIGKILL for its whole process group 10 s later.
import { spawn } from 'node:child_process'
import { existsSync, readdirSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..')
const EXAMPLES = join(ROOT, 'examples')
const GRACE_MS = 10_000

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: { timeout: { type: 'string', default: process.env.PMESH_EXAMPLE_TIMEOUT ?? '120' } }
})
const timeoutMs = Number(values.timeout) * 1000
if (!(timeoutMs > 0)) {
  console.error(`--timeout must be a positive number of seconds, got ${values.timeout}`)
  process.exit(2)
}

const all = readdirSync(EXAMPLES, { withFileTypes: true })
  .filter(d => d.isDirectory() && existsSync(join(EXAMPLES, d.name, 'main.mjs')))
  .map(d => d.name)
  .sort()
const unknown = positionals.filter(name => !all.includes(name))
if (unknown.length > 0) {
  console.error(`no such example: ${unknown.join(', ')} (have: ${all.join(', ')})`)
  process.exit(2)
}
const selected = positionals.length > 0 ? positionals : all

for (const pkg of ['node', 'cli']) {
  if (!existsSync(join(ROOT, 'packages', pkg, 'dist', 'index.js'))) {
    console.error(`packages/${pkg} is not built: run \`pnpm build\` first`)
    process.exit(2)
  }
}

let current
let interrupted = false
process.on('SIGINT', () => {
  interrupted = true
  // the example is in its own process group: pass Ctrl-C on so its cleanup runs
  if (current !== undefined) signalGroup(current, 'SIGINT')
})

function signalGroup (child, signal) {
  try {
    process.kill(-child.pid, signal)
  } catch {}
}

/** Run one example; resolves with { status: 'passed' | 'failed' | 'skipped', ms, reason? }. */
async function run (name) {
  const started = performance.now()
  const child = spawn(process.execPath, [join(EXAMPLES, name, 'main.mjs')], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
    // own process group: on a timeout the example and everything it spawned can be stopped
    detached: true
  })
  current = child
  let skip
  let tail = ''
  const relay = (stream, out) => {
    let partial = ''
    stream.setEncoding('utf8').on('data', (chunk) => {
      const lines = (partial + chunk).split('\n')
      partial = lines.pop()
      for (const line of lines) {
        if (skip === undefined && line.startsWith('SKIP:')) skip = line.slice(5).trim()
        out.write(`  │ ${line}\n`)
      }
      tail = (tail + chunk).slice(-2000)
    })
    stream.on('end', () => { if (partial !== '') out.write(`  │ ${partial}\n`) })
  }
  relay(child.stdout, process.stdout)
  relay(child.stderr, process.stderr)
  let timedOut = false
  const timer = setTimeout(() => {
    timedOut = true
    console.error(`  │ !! ${name} still running after ${timeoutMs / 1000} s: SIGINT, then SIGKILL in ${GRACE_MS / 1000} s`)
    signalGroup(child, 'SIGINT')
    setTimeout(() => signalGroup(child, 'SIGKILL'), GRACE_MS).unref()
  }, timeoutMs)
  const [code, signal] = await new Promise(resolve => child.once('close', (c, s) => resolve([c, s])))
  clearTimeout(timer)
  current = undefined
  // anything it left behind in its group goes too
  signalGroup(child, 'SIGKILL')
  const ms = performance.now() - started
  if (timedOut) return { status: 'failed', ms, reason: `timed out after ${timeoutMs / 1000} s` }
  if (code !== 0) return { status: 'failed', ms, reason: `exit ${signal ?? code}` }
  if (skip !== undefined) return { status: 'skipped', ms, reason: skip }
  return { status: 'passed', ms }
}

const results = []
const t0 = performance.now()
for (const name of selected) {
  if (interrupted) break
  console.log(`\n▶ ${name}`)
  const result = await run(name)
  results.push({ name, ...result })
  console.log(`${result.status === 'passed' ? '✓' : result.status === 'skipped' ? '○' : '✗'} ${name}: ${result.status} in ${(result.ms / 1000).toFixed(1)} s${result.reason !== undefined ? ` (${result.reason})` : ''}`)
}

const count = (status) => results.filter(r => r.status === status).length
console.log('\nexample              result   time')
for (const r of results) console.log(`${r.name.padEnd(20)} ${r.status.padEnd(8)} ${(r.ms / 1000).toFixed(1).padStart(5)} s${r.reason !== undefined ? `  ${r.reason}` : ''}`)
if (interrupted) console.log(`interrupted: ${selected.length - results.length} example(s) not run`)
console.log(`\n${count('passed')} passed, ${count('failed')} failed, ${count('skipped')} skipped (${((performance.now() - t0) / 1000).toFixed(1)} s)`)
process.exit(count('failed') > 0 || interrupted ? 1 : 0)
