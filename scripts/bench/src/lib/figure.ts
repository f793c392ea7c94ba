import { round } from './stats.js'

/** Is a bigger number better (throughput) or a smaller one (latency)? */
export type Better = 'lower' | 'higher'

export interface Goal {
  /** The ratio (value / baseline) the figure should stay within (absent for an absolute goal). */
  ratio?: number
  /** An absolute bound on the value itself, in the figure's unit (e.g. find p95 ≤ 100 ms). */
  value?: number
  /** Human form, e.g. "≤ 1.3× raw" or "≤ 100 ms". */
  text: string
  met: boolean
}

/** One measured figure beside its baseline, measured in the same run on the same machine. */
export interface Figure {
  label: string
  unit: string
  better: Better
  value: number
  baseline: number
  /** value / baseline */
  ratio: number
  /** The ratio measured in each round (mesh and raw measured back to back), when given: its spread shows how noisy the machine was. */
  roundRatios?: { min: number, median: number, max: number, n: number }
  goal?: Goal
}

export interface FigureInit {
  label: string
  unit: string
  better: Better
  value: number
  baseline: number
  /** Goal on the ratio: at most this when lower is better, at least this when higher is better. */
  goalRatio?: number
  /** Goal on the value itself: at most this when lower is better, at least this when higher is better. */
  goalValue?: number
  /** Per-round values, paired with `roundBaselines`. */
  roundValues?: number[]
  roundBaselines?: number[]
}

export function figure (init: FigureInit): Figure {
  const ratio = init.baseline > 0 ? init.value / init.baseline : Number.NaN
  const out: Figure = {
    label: init.label,
    unit: init.unit,
    better: init.better,
    value: round(init.value),
    baseline: round(init.baseline),
    ratio: Math.round(ratio * 1000) / 1000
  }
  if (init.roundValues !== undefined && init.roundBaselines !== undefined && init.roundValues.length > 0) {
    const ratios = init.roundValues.map((v, i) => v / init.roundBaselines![i]).sort((a, b) => a - b)
    const r3 = (x: number): number => Math.round(x * 1000) / 1000
    const mid = ratios.length / 2
    const median = ratios.length % 2 === 1 ? ratios[Math.floor(mid)] : (ratios[mid - 1] + ratios[mid]) / 2
    out.roundRatios = { min: r3(ratios[0]), median: r3(median), max: r3(ratios[ratios.length - 1]), n: ratios.length }
  }
  if (init.goalRatio !== undefined) {
    const met = init.better === 'lower' ? ratio <= init.goalRatio : ratio >= init.goalRatio
    out.goal = { ratio: init.goalRatio, text: `${init.better === 'lower' ? '≤' : '≥'} ${init.goalRatio}× raw`, met }
  } else if (init.goalValue !== undefined) {
    const met = init.better === 'lower' ? init.value <= init.goalValue : init.value >= init.goalValue
    out.goal = { value: init.goalValue, text: `${init.better === 'lower' ? '≤' : '≥'} ${init.goalValue} ${init.unit}`, met }
  }
  return out
}
