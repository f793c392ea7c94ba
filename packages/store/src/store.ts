import { mkdir } from 'node:fs/promises'
import { hostname } from 'node:os'
import { resolve } from 'node:path'
import { logger } from '@libp2p/logger'
import { LevelAuditLog } from './audit.js'
import { LevelCardCache } from './cards.js'
import {
  DEFAULT_DEDUPE_TTL_MS,
  DEFAULT_MAX_QUEUE_PER_PEER,
  DEFAULT_MAX_QUEUE_TOTAL,
  DEFAULT_SEQ_BLOCK
} from './constants.js'
import { type Db, encodePut, jsonSub, openLevel, type Sub } from './db.js'
import { InvalidRecordError, isLockedError, type OwnerInfo, StoreClosedError, StoreLockedError, toStoreError } from './errors.js'
import { LevelInbox } from './inbox.js'
import type { MeshStore, OpenStoreOptions, StoreStats } from './index.js'
import { LevelMetaStore } from './meta.js'
import { LevelOutbox } from './outbox.js'
import { describeOwner, removeOwner, writeOwner } from './owner.js'
import { Serial } from './serial.js'
import { LevelTaskStore } from './tasks.js'
import { SyncWriter } from './writer.js'

const log = logger('persona-mesh:store')

/**
 * Version of the on-disk layout, in `sys`. 2: envelopes inside their outbox/inbox records, no
 * index keys for queued entries, one dedupe expiry key per message. A store without it (or with
 * 1) is converted on open.
 */
const LAYOUT_KEY = 'layout'
const LAYOUT = 2

function positiveInt (value: number | undefined, fallback: number, what: string): number {
  const v = value ?? fallback
  if (!Number.isSafeInteger(v) || v < 1) {
    throw new InvalidRecordError(`${what} must be a positive integer`)
  }
  return v
}

/**
 * Open (creating if needed) the LevelDB store at `options.path`. Fails fast with
 * `StoreLockedError`, naming the owner, if another process (or another handle in this one) has it open.
 */
export async function openStore (options: OpenStoreOptions): Promise<MeshStore> {
  if (typeof options?.path !== 'string' || options.path === '') {
    throw new InvalidRecordError('openStore needs a path')
  }
  const maxPerPeer = positiveInt(options.maxQueuePerPeer, DEFAULT_MAX_QUEUE_PER_PEER, 'maxQueuePerPeer')
  const maxTotal = positiveInt(options.maxQueueTotal, DEFAULT_MAX_QUEUE_TOTAL, 'maxQueueTotal')
  const dedupeTtl = positiveInt(options.dedupeTtl, DEFAULT_DEDUPE_TTL_MS, 'dedupeTtl')
  const seqBlock = positiveInt(options.seqBlock, DEFAULT_SEQ_BLOCK, 'seqBlock')
  options.signal?.throwIfAborted()

  const path = resolve(options.path)
  try {
    await mkdir(path, { recursive: true })
  } catch (err) {
    throw toStoreError(err)
  }
  const db = openLevel(path)
  try {
    await db.open({ createIfMissing: true })
  } catch (err) {
    if (isLockedError(err)) {
      throw new StoreLockedError(path, await describeOwner(path), { cause: err })
    }
    throw toStoreError(err)
  }

  const owner: OwnerInfo = {
    pid: options.owner?.pid ?? process.pid,
    hostname: hostname(),
    startedAt: new Date().toISOString()
  }
  if (options.owner?.name !== undefined) owner.name = options.owner.name
  try {
    await writeOwner(path, owner)
    const store = new LevelMeshStore(db, path, owner, { maxPerPeer, maxTotal, dedupeTtl, seqBlock })
    await store.load()
    log('opened %s', path)
    return store
  } catch (err) {
    await db.close().catch(() => {})
    throw toStoreError(err)
  }
}

interface Limits {
  maxPerPeer: number
  maxTotal: number
  dedupeTtl: number
  seqBlock: number
}

class LevelMeshStore implements MeshStore {
  readonly outbox: LevelOutbox
  readonly inbox: LevelInbox
  readonly cards: LevelCardCache
  readonly tasks: LevelTaskStore
  readonly audit: LevelAuditLog
  readonly meta: LevelMetaStore
  private readonly writer: SyncWriter
  private readonly sys: Sub<unknown>
  private readonly serials: Serial[]
  private closed = false
  private closing: Promise<void> | undefined

  constructor (private readonly db: Db, readonly path: string, private readonly owner: OwnerInfo, limits: Limits) {
    this.writer = new SyncWriter(db)
    const guard = (): void => {
      if (this.closed) throw new StoreClosedError()
    }
    // one serial per domain: each keeps its check-then-write atomic; their batches still share fsyncs
    const outboxSerial = new Serial(this.writer)
    const inboxSerial = new Serial(this.writer)
    const miscSerial = new Serial(this.writer)
    this.serials = [outboxSerial, inboxSerial, miscSerial]
    this.sys = jsonSub(db, 'sys')
    this.outbox = new LevelOutbox({
      db,
      serial: outboxSerial,
      writer: this.writer,
      sys: this.sys,
      guard,
      maxPerPeer: limits.maxPerPeer,
      maxTotal: limits.maxTotal,
      seqBlock: limits.seqBlock
    })
    this.inbox = new LevelInbox({ db, serial: inboxSerial, guard, dedupeTtl: limits.dedupeTtl })
    this.cards = new LevelCardCache({ db, serial: miscSerial, guard })
    this.tasks = new LevelTaskStore({ db, serial: miscSerial, guard })
    this.audit = new LevelAuditLog({ db, writer: this.writer, guard })
    this.meta = new LevelMetaStore({ db, writer: this.writer, guard })
  }

  async load (): Promise<void> {
    // records written by an older version are converted once, before anything reads them
    const layout = await this.sys.get(LAYOUT_KEY)
    if (layout !== LAYOUT) {
      await this.outbox.migrate()
      await this.inbox.migrate()
      await this.writer.write([encodePut(this.sys, LAYOUT_KEY, LAYOUT)])
    }
    await this.outbox.load()
    await this.inbox.load()
  }

  stats (): StoreStats {
    return { writer: { ...this.writer.stats } }
  }

  async close (): Promise<void> {
    this.closing ??= this.shutdown()
    await this.closing
  }

  private async shutdown (): Promise<void> {
    this.closed = true
    await Promise.all(this.serials.map(async s => { await s.drain() }))
    await this.outbox.drain()
    await this.audit.drain()
    await this.writer.drain()
    await removeOwner(this.path, this.owner).catch(err => { log.error('could not remove owner file %e', err) })
    await this.db.close()
    log('closed %s', this.path)
  }
}
