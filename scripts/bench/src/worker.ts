/**
 * Child process entry: `node dist/worker.js <benchmark> <role> <json args>`.
 * Speaks JSON lines: stdin `{id, method, params}`, stdout `{t:'ready'|'res'|'fatal', ...}`.
 * Nothing else may write to stdout, so console output is sent to stderr.
 */
import { createInterface } from 'node:readline'
import { performance } from 'node:perf_hooks'
import type { BenchmarkModule, ProcessUsage, RoleInstance } from './lib/registry.js'

console.log = console.error
console.info = console.error
console.debug = console.error

const NAME = /^[a-z0-9][a-z0-9-]*$/

function send (msg: unknown): void {
  process.stdout.write(JSON.stringify(msg) + '\n')
}

function errorText (err: unknown): string {
  const e = err as Error
  return e?.stack ?? e?.message ?? String(err)
}

let instance: RoleInstance | undefined

/** Built-in method of every worker: CPU time so far (µs), event-loop busy time (ms) and memory (bytes). */
function usage (): ProcessUsage {
  const cpu = process.cpuUsage()
  const mem = process.memoryUsage()
  return { cpuUs: cpu.user + cpu.system, loopBusyMs: performance.eventLoopUtilization().active, rss: mem.rss, heapUsed: mem.heapUsed }
}
let closing: Promise<void> | undefined

async function shutdown (code: number): Promise<never> {
  closing ??= (async () => {
    const cap = setTimeout(() => { process.exit(code === 0 ? 4 : code) }, 3000)
    try {
      await instance?.close()
    } catch (err) {
      process.stderr.write(`close failed: ${errorText(err)}\n`)
    }
    clearTimeout(cap)
  })()
  await closing
  process.exit(code)
}

async function main (): Promise<void> {
  const [benchmark, role, json] = process.argv.slice(2)
  if (benchmark === undefined || role === undefined || !NAME.test(benchmark) || !NAME.test(role)) {
    throw new Error('usage: worker.js <benchmark> <role> <json args>')
  }
  const args = JSON.parse(json ?? '{}')
  const maxLifetimeMs = typeof args.maxLifetimeMs === 'number' ? args.maxLifetimeMs : 600_000
  // whatever happens, this process does not outlive its budget
  setTimeout(() => {
    process.stderr.write(`exceeded its ${maxLifetimeMs} ms lifetime; exiting\n`)
    process.exit(3)
  }, maxLifetimeMs).unref()
  process.once('SIGTERM', () => { void shutdown(143) })
  process.once('SIGINT', () => { void shutdown(130) })

  const mod = await import(`./benchmarks/${benchmark}.js`) as BenchmarkModule
  const factory = mod.roles?.[role]
  if (factory === undefined) throw new Error(`benchmark ${benchmark} has no role ${role}`)
  instance = await factory(args)

  const rl = createInterface({ input: process.stdin })
  // the parent went away (or asked us to stop): close and exit
  rl.on('close', () => { void shutdown(0) })
  rl.on('line', (line) => {
    let msg: { id: number, method: string, params?: unknown }
    try {
      msg = JSON.parse(line)
    } catch {
      return
    }
    if (msg.method === 'close') {
      void shutdown(0)
      return
    }
    if (msg.method === 'usage') {
      send({ t: 'res', id: msg.id, ok: true, data: usage() })
      return
    }
    const method = instance?.methods[msg.method]
    if (method === undefined) {
      send({ t: 'res', id: msg.id, ok: false, error: `unknown method ${msg.method}` })
      return
    }
    Promise.resolve()
      .then(async () => await method(msg.params ?? {}))
      .then(
        (data) => { send({ t: 'res', id: msg.id, ok: true, data: data ?? null }) },
        (err) => { send({ t: 'res', id: msg.id, ok: false, error: errorText(err) }) }
      )
  })
  send({ t: 'ready', data: instance.ready ?? null })
}

main().catch((err) => {
  send({ t: 'fatal', error: errorText(err) })
  void shutdown(1)
})
