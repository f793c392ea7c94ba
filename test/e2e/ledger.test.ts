/**
 * The effectively-once ledger (TESTING.md): every message whose `send()` resolved is in the
 * recipient's inbox exactly once, or still in the sender's outbox — across `kill -9` of either side
 * at any moment. Real processes: the recipient is a `pmesh start` daemon, the sender is
 * `fixtures/ledger-sender.mjs` (a node that reports every resolved send on stdout). Kill moments are
 * chosen by a seeded PRNG on the sender's progress (set LEDGER_SEED to replay a run); every wait is
 * on a line of output or a process exit, with a timeout.
 */

import type { ChildProcess } from 'node:child_process'
import { spawn } from 'node:child_process'
import type { AddressInfo } from 'node:net'
import { createServer } from 'node:net'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { afterEach, describe, expect, it } from 'vitest'
import { connectMesh } from '../../packages/node/dist/index.js'
import { Processes } from './processes.js'
import { prng } from '../support/random.js'

const FIXTURE = fileURLToPath(new URL('./fixtures/ledger-sender.mjs', import.meta.url))

/** One line the sender printed (see the fixture's header). */
interface Line {
  ready?: boolean
  peerId?: string
  queued?: number
  n?: number
  id?: string
  sent?: boolean
  connected?: boolean
  watchdog?: boolean
  drained?: boolean
  failed?: number
  expired?: number
  error?: string
  at?: number
}

interface SenderOptions {
  home: string
  name: string
  to: string
  addr: string
  from: number
  end: number
  concurrency?: number
  priorities?: boolean
  lifetime?: number
}

const running = new Set<Sender>()

/** A sender fixture process: its stdout lines, parsed, and waits on them. */
class Sender {
  readonly lines: Line[] = []
  stderr = ''
  done = false
  readonly closed: Promise<void>
  private readonly listeners = new Set<() => void>()

  static spawn (options: SenderOptions): Sender {
    const child = spawn(process.execPath, [FIXTURE, JSON.stringify({ listen: '/ip4/127.0.0.1/tcp/0', lifetime: 150_000, ...options })], {
      stdio: ['ignore', 'pipe', 'pipe']
    })
    return new Sender(child)
  }

  constructor (readonly child: ChildProcess) {
    running.add(this)
    const lines = createInterface({ input: child.stdout! })
    lines.on('line', (line) => { this.lines.push(JSON.parse(line) as Line); this.changed() })
    child.stderr!.setEncoding('utf8').on('data', (chunk: string) => { this.stderr += chunk })
    // every line is read once both the process and its stdout are gone
    this.closed = Promise.all([
      new Promise<void>(resolve => { child.once('close', () => { resolve() }) }),
      new Promise<void>(resolve => { lines.once('close', () => { resolve() }) })
    ]).then(() => {
      this.done = true
      running.delete(this)
      this.changed()
    })
  }

  /** The first line matching `match` (already printed or still to come); fails on exit or timeout. */
  async until (match: (line: Line) => boolean, what: string, timeout = 30_000): Promise<Line> {
    const found = (): Line | undefined => this.lines.find(match)
    const now = found()
    if (now !== undefined) return now
    return await new Promise<Line>((resolve, reject) => {
      const check = (): void => {
        const line = found()
        if (line !== undefined) {
          cleanup()
          resolve(line)
        } else if (this.done) {
          cleanup()
          reject(new Error(`sender exited (code ${this.child.exitCode}) before ${what}; stderr: ${this.stderr.slice(-2000)}`))
        }
      }
      const timer = setTimeout(() => {
        cleanup()
        reject(new Error(`timed out waiting for ${what}; last lines: ${JSON.stringify(this.lines.slice(-3))}; stderr: ${this.stderr.slice(-2000)}`))
      }, timeout)
      const cleanup = (): void => { clearTimeout(timer); this.listeners.delete(check) }
      this.listeners.add(check)
    })
  }

  async kill9 (): Promise<void> {
    if (!this.done) this.child.kill('SIGKILL')
    await this.closed
  }

  /** Resolved sends reported so far. */
  sends (): Array<{ n: number, id: string }> {
    return this.lines.filter((l): l is Line & { n: number, id: string } => typeof l.n === 'number' && typeof l.id === 'string')
  }

  private changed (): void {
    for (const listener of [...this.listeners]) listener()
  }
}

async function freePort (): Promise<number> {
  const server = createServer()
  await new Promise<void>(resolve => { server.listen(0, '127.0.0.1', resolve) })
  const { port } = server.address() as AddressInfo
  await new Promise<void>(resolve => { server.close(() => { resolve() }) })
  return port
}

interface Received { id: string, n: number, priority: string, from: string, kind: string }

/** The recipient daemon's whole inbox, read over its control socket page by page. */
async function inboxOf (name: string, home: string, from: string): Promise<Received[]> {
  const mesh = await connectMesh({ name, home })
  try {
    const out: Received[] = []
    let cursor: string | undefined
    for (let page = 0; page < 100; page++) {
      const { entries, nextCursor, more } = await mesh.inbox.read({ from, limit: 1000, ...(cursor !== undefined ? { cursor } : {}) })
      out.push(...entries.map(e => ({ id: e.id, n: (e.body as { n: number }).n, priority: e.priority, from: e.from, kind: e.kind })))
      if (!more) return out
      cursor = nextCursor
    }
    throw new Error('inbox paging did not end')
  } finally {
    mesh.close()
  }
}

/** Within each priority, inbox order is send order: ids (ULIDs, minted in send order) only grow, and so does n. */
function expectFifoPerPriority (entries: Received[]): void {
  for (const priority of ['high', 'normal', 'low']) {
    const lane = entries.filter(e => e.priority === priority)
    for (let i = 1; i < lane.length; i++) {
      const [a, b] = [lane[i - 1]!, lane[i]!]
      if (!(a.id < b.id && a.n <= b.n)) {
        throw new Error(`FIFO broken in ${priority}: ${JSON.stringify(a)} before ${JSON.stringify(b)}`)
      }
    }
  }
}

describe('effectively-once delivery between real processes', () => {
  const procs = new Processes()
  afterEach(async () => {
    await Promise.allSettled([...running].map(async s => { await s.kill9() }))
    await procs.teardown()
  })

  it('~1,000 messages, sender and recipient each kill -9ed at random moments: every resolved send is in the inbox exactly once, FIFO per priority', async () => {
    const TOTAL = 1000
    const seed = Number(process.env.LEDGER_SEED ?? (Date.now() % 1_000_000))
    const random = prng(seed)
    const home = await procs.home()
    const rxPort = await freePort()
    const rxArgs = ['--listen', `/ip4/127.0.0.1/tcp/${rxPort}`]
    let rx = await procs.start('rx', home, rxArgs)
    const base = { home, name: 'tx', to: rx.peerId, addr: `/ip4/127.0.0.1/tcp/${rxPort}/p2p/${rx.peerId}`, end: TOTAL, priorities: true }

    /** id → n of every send that resolved (was reported) in any run of the sender. */
    const resolved = new Map<string, number>()
    /** n a killed sender may have queued durably without living to report it: the one after its last report. */
    const unreported = new Set<number>()
    let senderKills = 0
    let rxKills = 0
    let watchdogs = 0
    let txId = ''
    let next = 0
    const started = Date.now()
    const story: string[] = []

    try {
      for (let round = 0; round < 6 && next < TOTAL && Date.now() - started < 90_000; round++) {
        const sender = Sender.spawn({ ...base, from: next })
        txId = (await sender.until(l => l.ready === true, 'the sender to start')).peerId!
        // sometimes at once (mid start-up flush), usually after a random number of sends
        const killSenderAt = random() < 0.15 ? next : next + 20 + Math.floor(random() * 300)
        const killRxAt = random() < 0.7 ? next + Math.floor(random() * 250) : undefined
        if (killRxAt !== undefined && killRxAt < killSenderAt) {
          await sender.until(l => (l.n ?? -1) >= killRxAt || l.sent === true, `send ${killRxAt}`)
          await procs.stop(rx.child, 'SIGKILL')
          rxKills++
          rx = await procs.start('rx', home, rxArgs)
          expect(rx.peerId).toBe(base.to)
        }
        if (killSenderAt > next) await sender.until(l => (l.n ?? -1) >= killSenderAt || l.sent === true, `send ${killSenderAt}`)
        await sender.kill9()
        senderKills++
        const sends = sender.sends()
        for (const { n, id } of sends) resolved.set(id, n)
        const last = sends.length > 0 ? Math.max(...sends.map(s => s.n)) : next - 1
        unreported.add(last + 1)
        watchdogs += sender.lines.filter(l => l.watchdog === true).length
        story.push(`round ${round}: sent ${next}..${last}${killRxAt !== undefined && killRxAt < killSenderAt ? `, rx killed at ${killRxAt}` : ''}, sender killed`)
        next = last + 1
      }

      // the end: both up, the sender sends what is left and waits until its outbox is empty
      const final = Sender.spawn({ ...base, from: next })
      txId = (await final.until(l => l.ready === true, 'the final sender to start')).peerId!
      const drained = await final.until(l => l.drained === true, 'the sender\'s outbox to drain', 60_000)
      await final.closed
      for (const { n, id } of final.sends()) resolved.set(id, n)
      watchdogs += final.lines.filter(l => l.watchdog === true).length
      story.push(`final: sent ${next}..${TOTAL - 1}, drained`)
      expect(drained).toMatchObject({ queued: 0, failed: 0, expired: 0 })
      expect(final.child.exitCode).toBe(0)

      const inbox = await inboxOf('rx', home, txId)
      const context = `seed ${seed}; ${story.join('; ')}`
      // nothing twice
      expect(new Set(inbox.map(e => e.id)).size, context).toBe(inbox.length)
      // every resolved send exactly once (the outbox is empty, so nothing may be left there)
      const byId = new Map(inbox.map(e => [e.id, e]))
      const missing = [...resolved].filter(([id]) => !byId.has(id))
      expect(missing, context).toEqual([])
      for (const [id, n] of resolved) expect(byId.get(id)!.n).toBe(n)
      // the only others: a send a killed sender made durable but did not live to report
      const extras = inbox.filter(e => !resolved.has(e.id))
      for (const e of extras) expect(unreported.has(e.n), `${context}; unexpected ${JSON.stringify(e)}`).toBe(true)
      expect(extras.length).toBeLessThanOrEqual(senderKills)
      expect(new Set(inbox.map(e => e.n)).size).toBe(TOTAL)
      expect(inbox.every(e => e.from === txId && e.kind === 'message')).toBe(true)
      expectFifoPerPriority(inbox)
      console.log(`ledger (seed ${seed}): ${resolved.size} resolved sends, ${inbox.length} in the inbox (${extras.length} sent again after a kill), ${senderKills} sender and ${rxKills} recipient kill -9s, ${watchdogs} watchdog reconnects, ${Math.round((Date.now() - started) / 1000)} s`)
    } catch (err) {
      (err as Error).message += ` [seed ${seed}; ${story.join('; ')}]`
      throw err
    }
  }, 180_000)

  // TESTING scale is 10,000; 2,000 keeps this file near two minutes on 2 cores
  it('2,000 messages queued while the recipient is offline all arrive, in order, none twice, once it comes up', async () => {
    const TOTAL = 2000
    const home = await procs.home()
    const rxPort = await freePort()
    const init = await procs.run(['init', '--name', 'rx', '--home', home, '--json'])
    expect(init.code).toBe(0)
    const rxId = (JSON.parse(init.stdout) as { peerId: string }).peerId

    const sender = Sender.spawn({ home, name: 'tx', to: rxId, addr: `/ip4/127.0.0.1/tcp/${rxPort}/p2p/${rxId}`, from: 0, end: TOTAL, concurrency: 16 })
    const ready = await sender.until(l => l.ready === true, 'the sender to start')
    const sendStart = Date.now()
    await sender.until(l => l.sent === true, 'all 2,000 sends to resolve', 90_000)
    const sendSeconds = (Date.now() - sendStart) / 1000
    const sends = sender.sends().sort((a, b) => a.n - b.n)
    expect(sends.map(s => s.n)).toEqual([...Array(TOTAL).keys()])
    // ids are minted in call order even with 16 sends in flight: FIFO below means n order
    for (let i = 1; i < sends.length; i++) expect(sends[i - 1]!.id < sends[i]!.id).toBe(true)
    expect(sender.lines.some(l => l.connected === true)).toBe(false)

    await procs.start('rx', home, ['--listen', `/ip4/127.0.0.1/tcp/${rxPort}`])
    const connected = await sender.until(l => l.connected === true, 'the sender to reach the recipient')
    const drained = await sender.until(l => l.drained === true, 'the outbox to drain', 90_000)
    expect(drained).toMatchObject({ queued: 0, failed: 0, expired: 0 })
    await sender.closed

    const inbox = await inboxOf('rx', home, ready.peerId!)
    expect(inbox.map(e => e.id)).toEqual(sends.map(s => s.id))
    expect(inbox.map(e => e.n)).toEqual([...Array(TOTAL).keys()])
    const drainMs = drained.at! - connected.at!
    console.log(`offline batch: ${TOTAL} sends resolved in ${sendSeconds.toFixed(1)} s (${Math.round(TOTAL / sendSeconds)}/s, 16 in flight); drained ${drainMs} ms after connecting (${Math.round(TOTAL / (drainMs / 1000))} msg/s); ${sender.lines.filter(l => l.watchdog === true).length} watchdog reconnects`)
  }, 180_000)
})
