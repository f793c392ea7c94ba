/**
 * The benchmarks, in the order `pnpm bench` runs them. Add one file under src/benchmarks/
 * exporting `benchmark` and `roles` (see `BenchmarkModule`), and list its name here.
 */
export const BENCHMARKS = ['rpc', 'discovery', 'delivery', 'tasks', 'mcp', 'footprint', 'nats', 'broadcast'] as const

export type BenchmarkName = (typeof BENCHMARKS)[number]
