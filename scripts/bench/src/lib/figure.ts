import { round } from './stats.js'

/** Is a bigger number better (throughput) or a smaller one (latency)? */
export type Better = 'lower' | 'higher'

export interface Goal {
  /** The ratio (value / baseline) the figure should stay within. */
  ratio: number
  /** Human form, e.g. "≤ 1.3× raw". */
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
  if (init.goalRatio !== undefined) {
    const met = init.better === 'lower' ? ratio <= init.goalRatio : ratio >= init.goalRatio
    out.goal = { ratio: init.goalRatio, text: `${init.better === 'lower' ? '≤' : '≥'} ${init.goalRatio}× raw`, met }
  }
  return out
}
