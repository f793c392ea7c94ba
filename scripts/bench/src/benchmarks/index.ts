/**
 * The benchmarks, in the order `pnpm bench` runs them. Add one file under src/benchmarks/
 * exporting `benchmark` and `roles` (see `BenchmarkModule`), and list its name here.
 */
export const BENCHMARKS = ['rpc'] as const

export type BenchmarkName = (typeof BENCHMARKS)[number]
