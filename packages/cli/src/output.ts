import { stripUnsafe } from '@persona-mesh/protocol'

/** Exit codes that mean something to scripts. */
export const EXIT = {
  ok: 0,
  error: 1,
  usage: 2,
  /** not found, or no daemon running for the persona */
  notFound: 3,
  timeout: 4
} as const

/** Raised by commands to end with a message and an exit code. */
export class CliExit extends Error {
  override name = 'CliExit'
  constructor (message: string, readonly code: number) {
    super(message)
  }
}

export function printJson (value: unknown): void {
  process.stdout.write(`${JSON.stringify(value)}\n`)
}

export function printLine (line = ''): void {
  process.stdout.write(`${line}\n`)
}

/** A plain aligned table for people; `--json` is for scripts. */
export function printTable (rows: Array<Record<string, string | number>>, columns: string[]): void {
  const widths = columns.map(c => Math.max(c.length, ...rows.map(r => String(r[c] ?? '').length)))
  const line = (cells: string[]): string => cells.map((cell, i) => cell.padEnd(widths[i] ?? 0)).join('  ').trimEnd()
  printLine(line(columns.map(c => c.toUpperCase())))
  for (const row of rows) printLine(line(columns.map(c => String(row[c] ?? ''))))
}

/** Map an error to an exit code by its name. */
export function exitCodeFor (err: unknown): number {
  if (err instanceof CliExit) return err.code
  switch ((err as Error)?.name) {
    case 'NoDaemonError':
    case 'NotFoundError':
      return EXIT.notFound
    case 'TimeoutError':
      return EXIT.timeout
    case 'InvalidArgumentError':
    case 'InvalidNameError':
    case 'CommanderError':
      return EXIT.usage
    default:
      return EXIT.error
  }
}

/**
 * Show a spinner on stderr while `work` runs, but only on a terminal and only after a second:
 * quick answers stay clean, and pipes never see it.
 */
export async function withProgress<T> (label: string, work: Promise<T>): Promise<T> {
  if (process.stderr.isTTY !== true) return work
  const frames = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏']
  let i = 0
  const started = Date.now()
  let shown = false
  const timer = setInterval(() => {
    if (Date.now() - started < 1000) return
    shown = true
    process.stderr.write(`\r${frames[i++ % frames.length]} ${label} (${Math.round((Date.now() - started) / 1000)}s)`)
  }, 100)
  try {
    return await work
  } finally {
    clearInterval(timer)
    if (shown) process.stderr.write('\r\x1b[K')
  }
}

/** One line of peer-authored text for a terminal: control and bidi characters removed, length capped. */
export function safeText (value: unknown, max = 200): string {
  const text = typeof value === 'string' ? value : JSON.stringify(value) ?? ''
  const clean = stripUnsafe(text, { keepNewlines: false })
  return clean.length > max ? `${clean.slice(0, max - 1)}…` : clean
}
