import { readFile, rename, rm, writeFile } from 'node:fs/promises'
import { hostname } from 'node:os'
import { join } from 'node:path'
import { setTimeout as delay } from 'node:timers/promises'
import { OWNER_FILE } from './constants.js'
import type { OwnerInfo } from './errors.js'

export function ownerPath (dir: string): string {
  return join(dir, OWNER_FILE)
}

/** Record who holds the directory (atomically: write, then rename). */
export async function writeOwner (dir: string, owner: OwnerInfo): Promise<void> {
  const tmp = `${ownerPath(dir)}.${process.pid}.tmp`
  await writeFile(tmp, JSON.stringify(owner, null, 2) + '\n', { mode: 0o644 })
  await rename(tmp, ownerPath(dir))
}

/** Remove owner.json if it is still ours. */
export async function removeOwner (dir: string, owner: OwnerInfo): Promise<void> {
  const held = await readOwnerFile(dir)
  if (held !== undefined && held.pid === owner.pid && held.startedAt === owner.startedAt) {
    await rm(ownerPath(dir), { force: true })
  }
}

async function readOwnerFile (dir: string): Promise<OwnerInfo | undefined> {
  try {
    const raw: unknown = JSON.parse(await readFile(ownerPath(dir), 'utf8'))
    if (typeof raw !== 'object' || raw === null) return undefined
    const o = raw as Record<string, unknown>
    if (typeof o.pid !== 'number' || typeof o.startedAt !== 'string') return undefined
    const info: OwnerInfo = { pid: o.pid, hostname: typeof o.hostname === 'string' ? o.hostname : '', startedAt: o.startedAt }
    if (typeof o.name === 'string') info.name = o.name
    return info
  } catch {
    return undefined
  }
}

function alive (owner: OwnerInfo): boolean {
  if (owner.hostname !== '' && owner.hostname !== hostname()) {
    // another host (shared file system): cannot check, trust the file
    return true
  }
  try {
    process.kill(owner.pid, 0)
    return true
  } catch (err) {
    return (err as { code?: string }).code === 'EPERM'
  }
}

const OWNER_READ_TRIES = 6
const OWNER_READ_DELAY_MS = 50

/**
 * Who holds the lock. The holder writes owner.json right after it gets the lock, so a missing or
 * stale file (left by a crashed owner) gets a few short retries (≤ 300 ms) before we give up on it.
 */
export async function describeOwner (dir: string): Promise<OwnerInfo | undefined> {
  for (let i = 0; ; i++) {
    const owner = await readOwnerFile(dir)
    if (owner !== undefined && alive(owner)) return owner
    if (i + 1 >= OWNER_READ_TRIES) return undefined
    await delay(OWNER_READ_DELAY_MS)
  }
}
