import { type ChildProcessWithoutNullStreams, spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { hostname } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { afterEach, beforeAll, describe, expect, it } from 'vitest'
import { openStore, StoreClosedError, StoreLockedError } from '../src/index.js'
import { TempStores } from './helpers.js'

const stores = new TempStores()
const children: ChildProcessWithoutNullStreams[] = []
afterEach(async () => {
  for (const child of children.splice(0)) {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL')
      await new Promise(resolve => child.once('exit', resolve))
    }
  }
  await stores.cleanup()
})

const packageDir = fileURLToPath(new URL('..', import.meta.url))
const dist = join(packageDir, 'dist', 'index.js')

beforeAll(() => {
  if (!existsSync(dist)) {
    throw new Error(`${dist} is missing: build first (npx tsc -b packages/store)`)
  }
})

/**
 * A second process that opens the store as persona aria, optionally queues `add` outbox entries
 * concurrently (printing each id once its add resolved), prints `ready`, and closes when stdin ends.
 */
const CHILD = `
const [dist, path, add] = process.argv.slice(1)
const { openStore } = await import(dist)
const { newId } = await import('@persona-mesh/protocol')
const store = await openStore({ path, owner: { name: 'aria' } })
const n = Number(add ?? 0)
await Promise.all(Array.from({ length: n }, async (_, i) => {
  const id = newId()
  const now = Date.now()
  await store.outbox.add([{ id, to: 'peer' + (i % 3), priority: 'normal', seq: i + 1, createdAt: now, expiresAt: now + 60000, bytes: new Uint8Array(512) }])
  process.stdout.write('added ' + id + '\\n')
}))
process.stdout.write('ready\\n')
process.stdin.on('end', () => { store.close().then(() => process.exit(0)) })
process.stdin.resume()
`

interface Child {
  proc: ChildProcessWithoutNullStreams
  lines: string[]
  ready: Promise<void>
  /** Resolves once the child printed `n` lines. */
  printed: (n: number) => Promise<void>
}

function startChild (path: string, add = 0): Child {
  const proc = spawn(process.execPath, ['--input-type=module', '-e', CHILD, dist, path, String(add)], { cwd: packageDir })
  children.push(proc)
  const lines: string[] = []
  let stderr = ''
  proc.stderr.on('data', d => { stderr += String(d) })
  const rl = createInterface({ input: proc.stdout })
  rl.on('line', line => { lines.push(line) })
  const gone = new Promise<never>((_resolve, reject) => {
    proc.once('exit', code => { reject(new Error(`child exited (${code}): ${stderr}`)) })
  })
  gone.catch(() => {})
  const when = async (done: () => boolean): Promise<void> => {
    let check = (): void => {}
    try {
      await Promise.race([gone, new Promise<void>(resolve => {
        check = () => { if (done()) resolve() }
        rl.on('line', check)
        check()
      })])
    } finally {
      rl.off('line', check)
    }
  }
  const ready = when(() => lines.includes('ready'))
  ready.catch(() => {}) // only an error for tests that wait for it
  return {
    proc,
    lines,
    ready,
    printed: async n => { await when(() => lines.length >= n) }
  }
}

async function exited (proc: ChildProcessWithoutNullStreams): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null) return
  await new Promise(resolve => proc.once('exit', resolve))
}

describe('one owner per data directory', () => {
  it('writes owner.json while open and removes it on close; close is idempotent', async () => {
    const dir = await stores.dir()
    const path = join(dir, 'db')
    const store = await openStore({ path, owner: { name: 'zed' } })
    const owner = JSON.parse(await readFile(join(path, 'owner.json'), 'utf8'))
    expect(owner).toMatchObject({ pid: process.pid, name: 'zed', hostname: hostname() })
    expect(Number.isNaN(Date.parse(owner.startedAt))).toBe(false)
    await Promise.all([store.close(), store.close()])
    await store.close()
    expect(existsSync(join(path, 'owner.json'))).toBe(false)
    await expect(store.outbox.add([])).rejects.toBeInstanceOf(StoreClosedError)
    await expect(store.meta.get('x')).rejects.toBeInstanceOf(StoreClosedError)
  })

  it('refuses a second open in the same process, naming the owner', async () => {
    const store = await stores.open({ owner: { name: 'zed' } })
    const err = await openStore({ path: store.path, owner: { name: 'other' } }).catch(e => e)
    expect(err).toBeInstanceOf(StoreLockedError)
    expect(err.name).toBe('StoreLockedError')
    expect(err.message).toContain(`data directory ${store.path} is in use by persona zed (pid ${process.pid}, this process, since `)
    expect(err.owner).toMatchObject({ pid: process.pid, name: 'zed' })
  })

  it('fails within 1 s with StoreLockedError naming the other process; opens once it is gone', async () => {
    const path = join(await stores.dir(), 'db')
    const child = startChild(path)
    await child.ready
    const started = performance.now()
    const err = await openStore({ path, owner: { name: 'bee' } }).catch(e => e)
    const elapsed = performance.now() - started
    expect(err).toBeInstanceOf(StoreLockedError)
    expect(err.message).toMatch(new RegExp(`^data directory .* is in use by persona aria \\(pid ${child.proc.pid}, since \\d{4}-\\d\\d-\\d\\dT[^)]+\\)$`))
    expect(err.message).not.toContain('LEVEL_')
    expect(elapsed).toBeLessThan(1000) // the brief's bound: a clear refusal, not a hang
    child.proc.stdin.end()
    await exited(child.proc)
    expect(child.proc.exitCode).toBe(0)
    const store = await stores.open({ path, owner: { name: 'bee' } })
    expect(store.path).toBe(path)
  })

  it('keeps every write whose promise resolved when the writer is killed -9, then opens', async () => {
    const path = join(await stores.dir(), 'db')
    const child = startChild(path, 300)
    // kill as soon as some adds have resolved, while others are still in flight
    await child.printed(20)
    child.proc.kill('SIGKILL')
    await exited(child.proc)
    const acked = child.lines.filter(l => l.startsWith('added ')).map(l => l.slice(6))
    expect(acked.length).toBeGreaterThanOrEqual(20)
    const store = await stores.open({ path })
    for (const id of acked) {
      expect((await store.outbox.get(id))?.status).toBe('queued')
    }
    // the counters are rebuilt from what is on disk, whatever that is
    const listed = await store.outbox.list({ status: 'queued', limit: 1000 })
    expect(store.outbox.count().total).toBe(listed.entries.length)
    const owner = JSON.parse(await readFile(join(path, 'owner.json'), 'utf8'))
    expect(owner.pid).toBe(process.pid)
  })
})
