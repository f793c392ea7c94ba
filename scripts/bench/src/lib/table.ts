import type { BenchResult } from './registry.js'

function fmt (v: number): string {
  if (!Number.isFinite(v)) return String(v)
  const abs = Math.abs(v)
  if (abs >= 1000) return Math.round(v).toLocaleString('en-US')
  if (abs >= 100) return v.toFixed(1)
  if (abs >= 1) return v.toFixed(2)
  return v.toFixed(3)
}

function pad (s: string, n: number, right = false): string {
  return right ? s.padStart(n) : s.padEnd(n)
}

/** A readable table of one benchmark's figures: mesh, raw, ratio, goal. */
export function renderTable (name: string, result: BenchResult): string {
  const rows = Object.values(result.figures).map(f => [
    `${f.label} (${f.unit})`,
    fmt(f.value),
    fmt(f.baseline),
    `${f.ratio.toFixed(2)}×`,
    f.roundRatios === undefined ? '' : `${f.roundRatios.min.toFixed(2)}–${f.roundRatios.max.toFixed(2)}`,
    f.goal === undefined ? '' : `${f.goal.text} ${f.goal.met ? 'met' : 'MISSED'}`
  ])
  const head = ['figure', 'mesh', 'raw', 'ratio', 'per round', 'goal']
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map(r => r[i].length)))
  const line = (cells: string[]): string => cells.map((c, i) => pad(c, widths[i], i > 0 && i < 5)).join('  ').trimEnd()
  return [
    `${name}: ${result.title}`,
    `baseline: ${result.baseline}`,
    ...(rows.length === 0 ? [] : ['', line(head), line(widths.map(w => '-'.repeat(w)))]),
    ...rows.map(line),
    ...(result.notes ?? []).map(n => `note: ${n}`)
  ].join('\n')
}
