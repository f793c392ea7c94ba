import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { canonicalEncode, createEnvelope, ENVELOPE_PAYLOAD_TYPE, type EnvelopeInit, type MessageEnvelope, newId, type Priority } from '@persona-mesh/protocol'
import type { InboxItem, MeshStore, OpenStoreOptions, OutboxEntryInit } from '../src/index.js'
import { openStore } from '../src/index.js'
import { type Db, openLevel } from '../src/db.js'

// real PeerIds: entries are read back from their envelopes, which must pass the envelope schema
export const ALICE = '12D3KooWPY2WpSsksWmZu3dwBo5ZzKSaXUkH3UYEQRPHsvYa7kaK'
export const BOB = '12D3KooWEbgJA1YtjTUUnx3hz9CySgMBsE75ack8LZiuj5uxbpyB'
export const CAROL = '12D3KooWKqW1xKXN1HcsuWMLtiUiebAMiCbDJji7imW1v4yLh2r4'

/** A temp dir per test, removed afterwards; stores opened through it are closed first. */
export class TempStores {
  private dirs: string[] = []
  private stores: MeshStore[] = []
  private dbs: Db[] = []

  async dir (): Promise<string> {
    const dir = await mkdtemp(join(tmpdir(), 'pm-store-'))
    this.dirs.push(dir)
    return dir
  }

  async open (options: Partial<OpenStoreOptions> & { path?: string } = {}): Promise<MeshStore> {
    const path = options.path ?? join(await this.dir(), 'db')
    const store = await openStore({ owner: { name: 'test' }, ...options, path })
    this.stores.push(store)
    return store
  }

  /** A bare LevelDB (the store's settings) in a temp dir, closed by `cleanup()`. */
  async level (): Promise<Db> {
    const db = openLevel(join(await this.dir(), 'db'))
    await db.open()
    this.dbs.push(db)
    return db
  }

  /** Close and open again on the same path. */
  async reopen (store: MeshStore, options: Partial<OpenStoreOptions> = {}): Promise<MeshStore> {
    await store.close()
    return await this.open({ ...options, path: store.path })
  }

  async cleanup (): Promise<void> {
    await Promise.all(this.stores.map(async s => { await s.close() }))
    await Promise.all(this.dbs.map(async db => { await db.close() }))
    await Promise.all(this.dirs.map(async d => { await rm(d, { recursive: true, force: true }) }))
    this.stores = []
    this.dbs = []
    this.dirs = []
  }
}

export function bytesOf (text: string, size = 0): Uint8Array {
  const b = new Uint8Array(Math.max(size, text.length))
  b.set(new TextEncoder().encode(text))
  return b
}

export function entry (to: string, init: Partial<OutboxEntryInit> = {}): OutboxEntryInit {
  const now = Date.now()
  const id = init.id ?? newId()
  return {
    id,
    to,
    priority: 'normal' as Priority,
    seq: 1,
    createdAt: now,
    expiresAt: now + 60_000,
    bytes: bytesOf(id),
    ...init
  }
}

export function envelope (init: Partial<EnvelopeInit> = {}): MessageEnvelope {
  return createEnvelope({ from: ALICE, to: BOB, body: { text: 'hi' }, seq: 1, ...init })
}

export function item (env: MessageEnvelope, extra: Partial<InboxItem> = {}): InboxItem {
  return { envelope: env, bytes: sealedLayout(env), receivedAt: Date.now(), ...extra }
}

/**
 * `env` in the layout of a sealed Ed25519 envelope, with a zero key and signature: the store never
 * verifies (the node does, before it stores), it only reads the envelope back.
 */
export function sealedLayout (env: MessageEnvelope): Uint8Array {
  const payload = canonicalEncode(env)
  const length: number[] = []
  for (let n = payload.byteLength; ; n >>>= 7) {
    if (n < 0x80) {
      length.push(n)
      break
    }
    length.push((n & 0x7f) | 0x80)
  }
  return Uint8Array.from([
    0x0a, 0x24, 0x08, 0x01, 0x12, 0x20, ...new Uint8Array(32),
    0x12, ENVELOPE_PAYLOAD_TYPE.byteLength, ...ENVELOPE_PAYLOAD_TYPE,
    0x1a, ...length, ...payload,
    0x2a, 0x40, ...new Uint8Array(64)
  ])
}
