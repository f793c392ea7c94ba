import { spawn } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import type { ChildProcess } from 'node:child_process'

/** The built `pmesh` entry point. */
export const PMESH = join(dirname(fileURLToPath(import.meta.url)), '../../packages/cli/dist/bin.js')

export interface Daemon {
  name: string
  peerId: string
  multiaddrs: string[]
  child: ChildProcess
  stderr: () => string
}

export interface CliResult {
  code: number | null
  stdout: string
  stderr: string
}

/** Spawned `pmesh` processes and temp homes, all cleaned up by `teardown()`. */
export class Processes {
  private readonly children = new Set<ChildProcess>()
  private readonly homes: string[] = []

  async home (): Promise<string> {
    const dir = await mkdtemp(join(tmpdir(), 'pmesh-e2e-'))
    this.homes.push(dir)
    return dir
  }

  /** `pmesh start` on 127.0.0.1 with mDNS off; resolves once it printed its JSON line. */
  async start (name: string, home: string, extra: string[] = [], timeout = 30_000): Promise<Daemon> {
    const child = spawn(process.execPath, [PMESH, 'start', '--name', name, '--home', home, '--listen', '/ip4/127.0.0.1/tcp/0', '--no-mdns', ...extra], {
      stdio: ['ignore', 'pipe', 'pipe']
    })
    this.children.add(child)
    child.once('exit', () => this.children.delete(child))
    let stderr = ''
    child.stderr!.setEncoding('utf8')
    child.stderr!.on('data', (chunk: string) => { stderr += chunk })
    const lines = createInterface({ input: child.stdout! })
    const first = await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => { reject(new Error(`pmesh start ${name} printed nothing within ${timeout} ms; stderr: ${stderr}`)) }, timeout)
      lines.once('line', (line) => { clearTimeout(timer); resolve(line) })
      child.once('exit', (code) => { clearTimeout(timer); reject(new Error(`pmesh start ${name} exited with ${code}; stderr: ${stderr}`)) })
    })
    const info = JSON.parse(first) as { peerId: string, name: string, multiaddrs: string[] }
    return { ...info, child, stderr: () => stderr }
  }

  /** Run one `pmesh` command to completion. */
  async run (args: string[], timeout = 30_000): Promise<CliResult> {
    const child = spawn(process.execPath, [PMESH, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
    this.children.add(child)
    let stdout = ''
    let stderr = ''
    child.stdout!.setEncoding('utf8').on('data', (c: string) => { stdout += c })
    child.stderr!.setEncoding('utf8').on('data', (c: string) => { stderr += c })
    const code = await new Promise<number | null>((resolve) => {
      const timer = setTimeout(() => { child.kill('SIGKILL') }, timeout)
      child.once('exit', (c) => { clearTimeout(timer); this.children.delete(child); resolve(c) })
    })
    return { code, stdout, stderr }
  }

  /** Send a signal and wait for the exit code (SIGKILL after `timeout`). */
  async stop (child: ChildProcess, signal: NodeJS.Signals = 'SIGTERM', timeout = 15_000): Promise<number | null> {
    if (child.exitCode !== null || child.signalCode !== null) return child.exitCode
    const exited = new Promise<number | null>(resolve => child.once('exit', (code) => { resolve(code) }))
    child.kill(signal)
    const timer = setTimeout(() => { child.kill('SIGKILL') }, timeout)
    try {
      return await exited
    } finally {
      clearTimeout(timer)
    }
  }

  async teardown (): Promise<void> {
    await Promise.allSettled([...this.children].map(async c => this.stop(c, 'SIGKILL')))
    await Promise.allSettled(this.homes.map(async d => { await rm(d, { recursive: true, force: true }) }))
    this.homes.length = 0
  }
}
