/**
 * Tier 5: every example runs and checks itself. Each example goes through scripts/run-examples.mjs
 * (the same runner CI and people use), one test per example so a failure names it. An example
 * that skips (multi-host when not root, claude-code without `pmesh mcp`) passes with a warning.
 */
import { spawn } from 'node:child_process'
import { existsSync, readdirSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..')
const RUNNER = join(ROOT, 'scripts', 'run-examples.mjs')
/** Per example, inside the runner. */
const EXAMPLE_TIMEOUT_S = 120
const EXAMPLES = readdirSync(join(ROOT, 'examples'), { withFileTypes: true })
  .filter(d => d.isDirectory() && existsSync(join(ROOT, 'examples', d.name, 'main.mjs')))
  .map(d => d.name)
  .sort()

async function runExample (name: string): Promise<{ code: number | null, output: string }> {
  const child = spawn(process.execPath, [RUNNER, '--timeout', String(EXAMPLE_TIMEOUT_S), name], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] })
  let output = ''
  child.stdout.setEncoding('utf8').on('data', (c: string) => { output += c })
  child.stderr.setEncoding('utf8').on('data', (c: string) => { output += c })
  // the runner bounds the example; this bounds the runner
  const guard = setTimeout(() => { child.kill('SIGINT') }, (EXAMPLE_TIMEOUT_S + 30) * 1000)
  const code = await new Promise<number | null>(resolve => child.once('close', resolve))
  clearTimeout(guard)
  return { code, output }
}

describe('examples (each runs and checks its own story)', () => {
  it('finds the examples', () => {
    expect(EXAMPLES).toEqual(expect.arrayContaining(['three-personas', 'offline-delivery', 'embed-in-agent', 'claude-code', 'multi-host']))
  })

  for (const name of EXAMPLES) {
    it(name, async () => {
      const { code, output } = await runExample(name)
      const summary = /^(\d+) passed, (\d+) failed, (\d+) skipped/m.exec(output)
      expect(summary, output).not.toBeNull()
      if (summary?.[3] === '1') console.warn(`examples/${name} skipped:\n${output.split('\n').filter(l => l.includes('SKIP:')).join('\n')}`)
      expect({ code, passedOrSkipped: Number(summary?.[1]) + Number(summary?.[3]), failed: Number(summary?.[2]) }, output).toEqual({ code: 0, passedOrSkipped: 1, failed: 0 })
    }, (EXAMPLE_TIMEOUT_S + 40) * 1000)
  }
})
