/** Summary of a set of latency samples (ms). */
export interface LatencySummary {
  count: number
  min: number
  mean: number
  p50: number
  p95: number
  p99: number
  max: number
}

/** Nearest-rank percentile of already sorted samples. */
export function percentile (sorted: ArrayLike<number>, p: number): number {
  if (sorted.length === 0) return Number.NaN
  const rank = Math.ceil((p / 100) * sorted.length)
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1]
}

export function summarize (samples: ArrayLike<number>): LatencySummary {
  const sorted = Float64Array.from(samples).sort()
  let sum = 0
  for (const v of sorted) sum += v
  return {
    count: sorted.length,
    min: sorted.length > 0 ? sorted[0] : Number.NaN,
    mean: sorted.length > 0 ? sum / sorted.length : Number.NaN,
    p50: percentile(sorted, 50),
    p95: percentile(sorted, 95),
    p99: percentile(sorted, 99),
    max: sorted.length > 0 ? sorted[sorted.length - 1] : Number.NaN
  }
}

/** Round for output: keeps 3 significant decimals for small values, whole numbers for big ones. */
export function round (value: number): number {
  if (!Number.isFinite(value)) return value
  const abs = Math.abs(value)
  const digits = abs >= 1000 ? 0 : abs >= 100 ? 1 : abs >= 1 ? 3 : 4
  const f = 10 ** digits
  return Math.round(value * f) / f
}
