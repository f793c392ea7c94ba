import type { ChildProcess } from 'node:child_process'
import { spawn } from 'node:child_process'
import { dirname, join } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import type { ProcessUsage } from './registry.js'

/** Set in workers started inside a network namespace: the only place a bench node may run mDNS. */
export const NETNS_ENV = 'PMESH_BENCH_NETNS'

/** `true` when mDNS is wanted; throws when it is wanted outside a network namespace (multicast must never leave the machine). */
export function mdnsInNetns (wanted: boolean | undefined): boolean {
  if (wanted !== true) return false
  if (process.env[NETNS_ENV] === undefined) throw new Error('mDNS is only allowed inside a network namespace (start the worker with netns)')
  return true
}

/** dist/worker.js, next to this module's parent directory. */
const WORKER_SCRIPT = join(dirname(dirname(fileURLToPath(import.meta.url))), 'worker.js')

export interface SpawnOptions {
  /** How long the worker may take to report ready. @default 30000 */
  readyTimeoutMs?: number
  /** Extra `node` flags, e.g. `--cpu-prof`. */
  nodeArgs?: string[]
  /** The worker exits by itself after this long, whatever happens. @default 600000 */
  maxLifetimeMs?: number
  /** Run the worker inside this network namespace (`ip netns exec NS node …`; root only). */
  netns?: string
}

interface Waiter {
  resolve(value: unknown): void
  reject(err: Error): void
  timer: NodeJS.Timeout
}

const live = new Set<Worker>()

/**
 * A child `node` process running one role of one benchmark (`node dist/worker.js <benchmark>
 * <role> <json args>`). Parent → child: JSON lines on stdin (`{id, method, params}`);
 * child → parent: JSON lines on stdout (`ready`, `res`, `fatal`). Its stderr is forwarded,
 * prefixed. A call that does not answer in time kills the worker.
 */
export class Worker {
  readonly label: string
  ready: any
  private readonly child: ChildProcess
  private readonly waiters = new Map<number, Waiter>()
  private nextId = 0
  private exited = false
  private readonly exitPromise: Promise<void>
  private readyWaiter?: Waiter

  private constructor (readonly benchmark: string, readonly role: string, args: unknown, options: SpawnOptions) {
    this.label = `${benchmark}/${role}`
    const payload = JSON.stringify({ ...(args as object ?? {}), maxLifetimeMs: options.maxLifetimeMs ?? 600_000 })
    const argv = [...(options.nodeArgs ?? []), WORKER_SCRIPT, benchmark, role, payload]
    // `ip netns exec` execs the command: the child's PID is node's own, signals reach it
    const [file, spawnArgs]: [string, string[]] = options.netns === undefined ? [process.execPath, argv] : ['ip', ['netns', 'exec', options.netns, process.execPath, ...argv]]
    this.child = spawn(file, spawnArgs, {
      stdio: ['pipe', 'pipe', 'pipe'],
      // NETNS_ENV tells the worker it runs inside a network namespace (where mDNS may run)
      env: { ...process.env, NODE_OPTIONS: '', ...(options.netns !== undefined ? { [NETNS_ENV]: options.netns } : {}) }
    })
    live.add(this)
    this.exitPromise = new Promise<void>((resolve) => {
      this.child.once('exit', (code, signal) => {
        this.exited = true
        live.delete(this)
        const err = new Error(`worker ${this.label} exited (${signal ?? `code ${code}`})`)
        this.readyWaiter?.reject(err)
        for (const w of this.waiters.values()) { clearTimeout(w.timer); w.reject(err) }
        this.waiters.clear()
        resolve()
      })
    })
    this.child.once('error', (err) => {
      this.readyWaiter?.reject(err)
    })
    this.child.stdin!.on('error', () => {}) // EPIPE when the child died: the exit handler reports it
    createInterface({ input: this.child.stdout! }).on('line', (line) => { this.onLine(line) })
    createInterface({ input: this.child.stderr! }).on('line', (line) => {
      process.stderr.write(`  [${this.label}] ${line}\n`)
    })
  }

  /** Start a worker and wait until it reports ready (its ready data is in `worker.ready`). */
  static async start (benchmark: string, role: string, args: unknown = {}, options: SpawnOptions = {}): Promise<Worker> {
    const worker = new Worker(benchmark, role, args, options)
    const timeoutMs = options.readyTimeoutMs ?? 30_000
    try {
      worker.ready = await new Promise<unknown>((resolve, reject) => {
        const timer = setTimeout(() => { reject(new Error(`worker ${worker.label} not ready within ${timeoutMs} ms`)) }, timeoutMs)
        worker.readyWaiter = {
          resolve: (v) => { clearTimeout(timer); resolve(v) },
          reject: (e) => { clearTimeout(timer); reject(e) },
          timer
        }
      })
    } catch (err) {
      worker.kill()
      throw err
    } finally {
      worker.readyWaiter = undefined
    }
    return worker
  }

  private onLine (line: string): void {
    let msg: any
    try {
      msg = JSON.parse(line)
    } catch {
      process.stderr.write(`  [${this.label}] (stdout) ${line}\n`)
      return
    }
    if (msg?.t === 'ready') {
      this.readyWaiter?.resolve(msg.data)
    } else if (msg?.t === 'res') {
      const waiter = this.waiters.get(msg.id)
      if (waiter === undefined) return
      this.waiters.delete(msg.id)
      clearTimeout(waiter.timer)
      if (msg.ok === true) waiter.resolve(msg.data)
      else waiter.reject(new Error(`${this.label}: ${msg.error}`))
    } else if (msg?.t === 'fatal') {
      const err = new Error(`${this.label} failed: ${msg.error}`)
      this.readyWaiter?.reject(err)
      for (const w of this.waiters.values()) { clearTimeout(w.timer); w.reject(err) }
      this.waiters.clear()
    }
  }

  /** Call a method of the role; the worker is killed if it does not answer within `timeoutMs`. */
  async call<T = any> (method: string, params: unknown, timeoutMs: number): Promise<T> {
    if (this.exited) throw new Error(`worker ${this.label} is not running`)
    const id = ++this.nextId
    return await new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters.delete(id)
        reject(new Error(`worker ${this.label}: ${method} did not answer within ${timeoutMs} ms; killed`))
        this.kill()
      }, timeoutMs)
      this.waiters.set(id, { resolve: resolve as (v: unknown) => void, reject, timer })
      this.child.stdin!.write(JSON.stringify({ id, method, params }) + '\n')
    })
  }

  /** CPU time so far and memory of the worker process (built into every worker). */
  async usage (): Promise<ProcessUsage> {
    return await this.call<ProcessUsage>('usage', {}, 10_000)
  }

  /** Ask the worker to stop cleanly; kill it if it has not exited within `timeoutMs`. */
  async close (timeoutMs = 5000): Promise<void> {
    if (this.exited) return
    this.child.stdin!.end(JSON.stringify({ id: 0, method: 'close' }) + '\n')
    const timer = setTimeout(() => { this.kill() }, timeoutMs)
    await this.exitPromise
    clearTimeout(timer)
  }

  /** SIGTERM, then SIGKILL if it is still there after a grace period. */
  kill (graceMs = 2000): void {
    if (this.exited) return
    this.child.kill('SIGTERM')
    setTimeout(() => { if (!this.exited) this.child.kill('SIGKILL') }, graceMs).unref()
  }

  /** Last resort, synchronous (for `process.on('exit')`). */
  killNow (): void {
    if (!this.exited) this.child.kill('SIGKILL')
  }

  get exitedPromise (): Promise<void> {
    return this.exitPromise
  }
}

/** Close every worker still running (cleanly, then by force). */
export async function closeAllWorkers (timeoutMs = 5000): Promise<void> {
  await Promise.all([...live].map(async w => { await w.close(timeoutMs) }))
}

/** Kill every worker still running, at once. */
export function killAllWorkers (): void {
  for (const w of live) w.killNow()
}

export function liveWorkerCount (): number {
  return live.size
}
