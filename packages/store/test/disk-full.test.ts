import { execFileSync } from 'node:child_process'
import { join } from 'node:path'
import { newId } from '@persona-mesh/protocol'
import { afterEach, describe, expect, it } from 'vitest'
import { openStore, StorageFullError } from '../src/index.js'
import { BOB, entry, envelope, item, TempStores } from './helpers.js'

const stores = new TempStores()
afterEach(async () => { await stores.cleanup() })

const isRoot = process.getuid?.() === 0

describe('disk full', () => {
  it('surfaces ENOSPC as StorageFullError and keeps reads working (real 512 KiB tmpfs; needs root)', async ctx => {
    if (!isRoot) {
      ctx.skip('not root: cannot mount a tmpfs to fill up, disk-full behaviour not tested')
      return
    }
    const dir = await stores.dir()
    try {
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=512k', 'tmpfs', dir], { stdio: 'pipe' })
    } catch (err) {
      ctx.skip(`cannot mount a tmpfs here (${String(err).split('\n')[0]}): disk-full behaviour not tested`)
      return
    }
    try {
      const store = await openStore({ path: join(dir, 'db'), owner: { name: 'full' } })
      try {
        const added: string[] = []
        let failure: unknown
        let failedId = ''
        for (let i = 0; i < 200 && failure === undefined; i++) {
          const e = entry(BOB, { bytes: new Uint8Array(16 * 1024).fill(i) })
          try {
            await store.outbox.add([e])
            added.push(e.id)
          } catch (err) {
            failure = err
            failedId = e.id
          }
        }
        expect(added.length).toBeGreaterThan(0)
        expect(failure).toBeInstanceOf(StorageFullError)
        expect((failure as Error).name).toBe('StorageFullError')
        expect((failure as Error).message).toMatch(/no space left on device/i)

        // nothing of the failed call, everything before it; reads keep working
        expect(await store.outbox.get(failedId)).toBeUndefined()
        expect(await store.outbox.get(added[0])).toMatchObject({ status: 'queued' })
        expect((await store.outbox.pending(BOB, { limit: 1000 })).map(e => e.id)).toEqual(added)
        expect(store.outbox.count().total).toBe(added.length)
        expect((await store.outbox.list({ limit: 1000 })).entries).toHaveLength(added.length)
        expect(await store.inbox.read()).toMatchObject({ entries: [], more: false })

        // later writes of every kind fail the same typed way
        await expect(store.inbox.accept([item(envelope())])).rejects.toBeInstanceOf(StorageFullError)
        await expect(store.meta.put('k', 1)).rejects.toBeInstanceOf(StorageFullError)
        await expect(store.outbox.add([entry(BOB, { id: newId() })])).rejects.toBeInstanceOf(StorageFullError)
        expect(store.inbox.unread()).toBe(0)
      } finally {
        await store.close().catch(() => {})
      }
    } finally {
      execFileSync('umount', [dir])
    }
  })
})
