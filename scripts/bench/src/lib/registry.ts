import type { Figure } from './figure.js'
import type { SpawnOptions, Worker } from './workers.js'

/** What a benchmark gets from the harness. */
export interface BenchContext {
  /** Smaller counts for a smoke run (`--quick`). */
  quick: boolean
  /** Aborted on SIGINT/SIGTERM: stop starting new phases. */
  signal: AbortSignal
  /** Start a child process running `role` of this benchmark; closed by the harness afterwards. */
  spawn(role: string, args?: unknown, options?: SpawnOptions): Promise<Worker>
  /** Progress, to stderr. */
  log(message: string): void
}

export interface BenchResult {
  /** One line saying what was measured. */
  title: string
  /** What the baseline is. */
  baseline: string
  /** The parameters the figures depend on. */
  config: Record<string, unknown>
  /** Every figure beside its baseline (`value`, `baseline`, `ratio`). */
  figures: Record<string, Figure>
  /** Anything else worth keeping (raw summaries, sample counts). */
  details?: Record<string, unknown>
  /** Printed under the table: what was skipped and why, how nodes were placed in processes, … */
  notes?: string[]
}

export interface Benchmark {
  name: string
  description: string
  run(ctx: BenchContext): Promise<BenchResult>
}

/** What the built-in `usage` method of every worker returns. */
export interface ProcessUsage {
  /** User + system CPU time since the process started, µs. */
  cpuUs: number
  /** Time the main thread's event loop was busy since the process started, ms. */
  loopBusyMs: number
  rss: number
  heapUsed: number
}

/** One process role of a benchmark, run by `dist/worker.js`. */
export interface RoleInstance {
  /** Reported to the parent once the role is set up (e.g. the listen address). */
  ready?: unknown
  /** Methods the parent may call; each gets the params and returns JSON-able data. */
  methods: Record<string, (params: any) => Promise<unknown> | unknown>
  /** Stop everything the role started. */
  close(): Promise<void>
}

/** Roles must import heavy dependencies lazily (inside the factory), so each process loads only its own stack. */
export type RoleFactory = (args: any) => Promise<RoleInstance>

/** A benchmark module under src/benchmarks/: the parent side and the roles of its child processes. */
export interface BenchmarkModule {
  benchmark: Benchmark
  roles: Record<string, RoleFactory>
}
