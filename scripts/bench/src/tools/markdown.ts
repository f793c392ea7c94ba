/**
 * `node scripts/bench/dist/tools/markdown.js <run.json>` — the figures of a `pnpm bench` run
 * document (stdout of the bench, or a `.bench/<name>-<time>.json`) as Markdown tables, with the
 * machine, for docs/benchmarks.md.
 */
import { readFileSync } from 'node:fs'
import type { Figure } from '../lib/figure.js'

interface Doc {
  schema: string
  startedAt: string
  quick: boolean
  machine: { cpus: number, cpuModel: string, totalMemoryMB: number, loadAverage: number[], node: string, platform: string, release: string, commit?: string, dirty?: boolean }
  results: Record<string, { title: string, baseline: string, figures: Record<string, Figure>, notes?: string[] } | { error: string }>
}

function fmt (v: number): string {
  if (!Number.isFinite(v)) return String(v)
  const abs = Math.abs(v)
  if (abs >= 1000) return Math.round(v).toLocaleString('en-US')
  if (abs >= 100) return v.toFixed(1)
  if (abs >= 1) return v.toFixed(2)
  return v.toFixed(3)
}

const file = process.argv[2]
if (file === undefined) {
  process.stderr.write('usage: markdown.js <run.json>\n')
  process.exit(2)
}
const text = readFileSync(file, 'utf8').trim().split('\n').filter(l => l.startsWith('{')).at(-1) ?? readFileSync(file, 'utf8')
const doc = JSON.parse(text) as Doc
const m = doc.machine
const out: string[] = []
out.push(`Run of ${doc.startedAt}${doc.quick ? ' (--quick)' : ''}: ${m.cpus} × ${m.cpuModel}, ${Math.round(m.totalMemoryMB / 1024)} GB, Node ${m.node}, ${m.platform} ${m.release}, commit ${m.commit ?? '?'}${m.dirty === true ? ' (uncommitted changes)' : ''}, load average at start ${m.loadAverage.join(' / ')}.`)
out.push('')
for (const [name, r] of Object.entries(doc.results)) {
  out.push(`### ${name}`)
  out.push('')
  if ('error' in r) {
    out.push(`Failed: ${r.error.split('\n')[0]}`)
    out.push('')
    continue
  }
  out.push(`${r.title}. Baseline: ${r.baseline}.`)
  out.push('')
  if (Object.keys(r.figures).length > 0) {
    out.push('| figure | mesh | baseline | ratio | per round | goal |')
    out.push('|---|--:|--:|--:|--:|---|')
    for (const f of Object.values(r.figures)) {
      const rounds = f.roundRatios === undefined ? '' : `${f.roundRatios.min.toFixed(2)}–${f.roundRatios.max.toFixed(2)}`
      const goal = f.goal === undefined ? '' : `${f.goal.text}: ${f.goal.met ? 'met' : '**missed**'}`
      out.push(`| ${f.label} (${f.unit}) | ${fmt(f.value)} | ${fmt(f.baseline)} | ${Number.isFinite(f.ratio) ? f.ratio.toFixed(2) + '×' : '–'} | ${rounds} | ${goal} |`)
    }
    out.push('')
  }
  for (const n of r.notes ?? []) out.push(`- ${n}`)
  if ((r.notes ?? []).length > 0) out.push('')
}
process.stdout.write(out.join('\n') + '\n')
