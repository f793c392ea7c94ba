import { connectMesh, defaultHome, defaultName } from '@persona-mesh/node'
import { InvalidArgumentError } from '@persona-mesh/node'
import type { Command } from 'commander'
import type { JsonValue } from '@persona-mesh/protocol'
import type { RemoteMesh } from '@persona-mesh/node'

export interface GlobalOptions {
  name: string
  home: string
  json?: boolean
}

/** The persona options every command shares, resolved from flags, then env, then defaults. */
export function globals (command: Command): GlobalOptions {
  const opts = command.optsWithGlobals<{ name?: string, home?: string, json?: boolean }>()
  // empty values (e.g. --home "$UNSET") fall back to the defaults rather than the current directory
  return { name: opts.name || defaultName(), home: opts.home || defaultHome(), json: opts.json }
}

/** Attach to the persona's daemon; the caller closes it. */
export async function attach (command: Command): Promise<RemoteMesh> {
  const { name, home } = globals(command)
  return connectMesh({ name, home })
}

export async function withMesh<T> (command: Command, fn: (mesh: RemoteMesh) => Promise<T>): Promise<T> {
  const mesh = await attach(command)
  try {
    return await fn(mesh)
  } finally {
    mesh.close()
  }
}

export function parseJsonArg (text: string, what: string): JsonValue {
  try {
    return JSON.parse(text) as JsonValue
  } catch (err) {
    throw new InvalidArgumentError(`${what} is not valid JSON: ${(err as Error).message}`)
  }
}

export function collect (value: string, previous: string[] = []): string[] {
  return [...previous, value]
}

export function positiveInt (value: string): number {
  const n = Number(value)
  if (!Number.isInteger(n) || n <= 0) throw new InvalidArgumentError(`expected a positive whole number, got ${value}`)
  return n
}
