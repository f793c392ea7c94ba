/**
 * `node scripts/bench/dist/tools/profile-summary.js <file.cpuprofile> [top]` — where a worker's
 * CPU went (from `pnpm bench <name> --cpu-prof`): self time by package, then by function.
 */
import { readFileSync } from 'node:fs'

interface ProfileNode { id: number, callFrame: { functionName: string, url: string, lineNumber: number } }
interface Profile { nodes: ProfileNode[], samples: number[], timeDeltas: number[] }

function packageOf (url: string): string {
  if (url === '') return '(native, gc, idle)'
  const pnpm = url.match(/node_modules\/\.pnpm\/([^/]+)\//)
  if (pnpm !== null) return pnpm[1].replace(/@[\d.]+(_.*)?$/, '').replace('+', '/')
  const ws = url.match(/\/(packages|scripts)\/([^/]+)\//)
  if (ws !== null) return `${ws[1]}/${ws[2]}`
  if (url.startsWith('node:')) return 'node:' + url.slice(5).split('/')[0]
  return url.split('/').slice(-2).join('/')
}

function main (): void {
  const [file, topArg] = process.argv.slice(2)
  if (file === undefined) {
    process.stderr.write('usage: profile-summary.js <file.cpuprofile> [top]\n')
    process.exitCode = 2
    return
  }
  const top = Number(topArg ?? 30)
  const profile = JSON.parse(readFileSync(file, 'utf8')) as Profile
  const nodes = new Map(profile.nodes.map(n => [n.id, n]))
  const selfTime = new Map<number, number>()
  for (let i = 0; i < profile.samples.length; i++) {
    selfTime.set(profile.samples[i], (selfTime.get(profile.samples[i]) ?? 0) + (profile.timeDeltas[i] ?? 0))
  }
  const byPackage = new Map<string, number>()
  const byFunction = new Map<string, number>()
  let total = 0
  let idle = 0
  for (const [id, us] of selfTime) {
    const cf = nodes.get(id)!.callFrame
    total += us
    if (cf.functionName === '(idle)') idle += us
    const fn = `${cf.functionName || '(anonymous)'} ${cf.url.split('/').slice(-2).join('/')}:${cf.lineNumber + 1}`
    byFunction.set(fn, (byFunction.get(fn) ?? 0) + us)
    const pkg = packageOf(cf.url)
    byPackage.set(pkg, (byPackage.get(pkg) ?? 0) + us)
  }
  const print = (title: string, m: Map<string, number>): void => {
    console.log(`-- ${title}`)
    for (const [k, us] of [...m].sort((a, b) => b[1] - a[1]).slice(0, top)) {
      console.log(`${(us / total * 100).toFixed(1).padStart(5)}%  ${(us / 1000).toFixed(0).padStart(7)} ms  ${k}`)
    }
  }
  console.log(`${file}: ${(total / 1000).toFixed(0)} ms sampled, ${(idle / 1000).toFixed(0)} ms idle`)
  print('self time by package', byPackage)
  print('self time by function', byFunction)
}

main()
