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
