// Group-commit numbers for @persona-mesh/store (1 KiB values). Build first: npx tsc -b packages/store
// Run: node packages/store/bench/group-commit.mjs
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createEnvelope, newId } from '@persona-mesh/protocol'
import { Level } from 'level'
import { openStore } from '../dist/index.js'

const KIB = new Uint8Array(1024).fill(7)
const out = (label, n, ms) => process.stdout.write(`${label.padEnd(58)} ${String(Math.round(n / (ms / 1000))).padStart(8)} records/s\n`)

async function time (fn) {
  const t = performance.now()
  await fn()
  return performance.now() - t
}

const dir = await mkdtemp(join(tmpdir(), 'pm-bench-'))
try {
  // raw level, for reference
  const raw = new Level(join(dir, 'raw'), { valueEncoding: 'view' })
  await raw.open()
  let n = 2000
  out('level: put {sync:true}, one at a time', n, await time(async () => {
    for (let i = 0; i < n; i++) await raw.put(`a${i}`, KIB, { sync: true })
  }))
  n = 20000
  out('level: synced batches of 100', n, await time(async () => {
    for (let i = 0; i < n; i += 100) {
      await raw.batch(Array.from({ length: 100 }, (_, j) => ({ type: 'put', key: `b${i + j}`, value: KIB })), { sync: true })
    }
  }))
  await raw.close()

  const store = await openStore({ path: join(dir, 'store'), maxQueuePerPeer: 1e6, maxQueueTotal: 1e6 })
  const entry = to => {
    const now = Date.now()
    return { id: newId(), to, priority: 'normal', seq: 1, createdAt: now, expiresAt: now + 60000, bytes: KIB }
  }

  n = 2000
  out('store: outbox.add of 1 entry, one call at a time', n, await time(async () => {
    for (let i = 0; i < n; i++) await store.outbox.add([entry('solo')])
  }))
  n = 20000
  out('store: outbox.add, 100 concurrent single-entry calls', n, await time(async () => {
    for (let i = 0; i < n; i += 100) await Promise.all(Array.from({ length: 100 }, () => store.outbox.add([entry(`p${i % 7}`)])))
  }))
  n = 20000
  out('store: outbox.add of 100 entries per call', n, await time(async () => {
    for (let i = 0; i < n; i += 100) await store.outbox.add(Array.from({ length: 100 }, () => entry('batch')))
  }))
  const ids = (await store.outbox.pending('batch', { limit: 10000 })).map(e => e.id)
  out('store: outbox.settle delivered, 100 ids per call', ids.length, await time(async () => {
    for (let i = 0; i < ids.length; i += 100) await store.outbox.settle(ids.slice(i, i + 100), { status: 'delivered' })
  }))
  n = 20000
  let seq = 0
  const item = () => {
    const envelope = createEnvelope({ from: '12D3KooWBenchBenchBenchBenchBenchBenchBenchBench', to: 'me', body: 'x'.repeat(700), seq: ++seq })
    return { envelope, bytes: KIB, receivedAt: Date.now() }
  }
  out('store: inbox.accept of 100 items per call', n, await time(async () => {
    for (let i = 0; i < n; i += 100) await store.inbox.accept(Array.from({ length: 100 }, item))
  }))
  out('store: inbox.accept, 100 concurrent single-item calls', n, await time(async () => {
    for (let i = 0; i < n; i += 100) await Promise.all(Array.from({ length: 100 }, () => store.inbox.accept([item()])))
  }))
  n = 5000
  out('store: meta.put, 100 concurrent', n, await time(async () => {
    for (let i = 0; i < n; i += 100) await Promise.all(Array.from({ length: 100 }, (_, j) => store.meta.put(`k${j}`, i)))
  }))
  const { writer } = store.stats()
  process.stdout.write(`writer: ${writer.writes} synced writes in ${writer.batches} batches (${(writer.writes / writer.batches).toFixed(1)} per fsync)\n`)
  await store.close()
} finally {
  await rm(dir, { recursive: true, force: true })
}
