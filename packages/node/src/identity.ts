import { randomBytes } from 'node:crypto'
import { chmod, link, mkdir, open, readFile, rename, unlink } from 'node:fs/promises'
import { homedir } from 'node:os'
import { join, resolve } from 'node:path'
import { generateKeyPair, privateKeyFromProtobuf, privateKeyToProtobuf } from '@libp2p/crypto/keys'
import { IdentityError, InvalidNameError } from './errors.js'
import type { PrivateKey } from '@libp2p/interface'

/** Persona names become directory names: keep them short and boring. */
const NAME_PATTERN = /^[a-z0-9][a-z0-9_-]{0,63}$/i

/** The name used when none is given. */
export const DEFAULT_NAME = 'default'

export const IDENTITY_FILE = 'identity.key'

export function validateName (name: string): string {
  if (!NAME_PATTERN.test(name)) {
    throw new InvalidNameError(`invalid persona name ${JSON.stringify(name)}: use 1-64 letters, digits, '-' or '_', starting with a letter or digit`)
  }
  return name
}

/** `$PMESH_HOME`, else `~/.persona-mesh`. */
export function defaultHome (): string {
  const env = process.env.PMESH_HOME
  return env !== undefined && env !== '' ? resolve(env) : join(homedir(), '.persona-mesh')
}

/** `PMESH_NAME`, else `default`. */
export function defaultName (): string {
  const env = process.env.PMESH_NAME
  return env !== undefined && env !== '' ? env : DEFAULT_NAME
}

/** Where a persona keeps its key, config, database and control socket. */
export function personaDir (home: string, name: string): string {
  return join(resolve(home), validateName(name))
}

/**
 * Load the persona's Ed25519 key, creating it on first use. The file is written atomically
 * (temp file, then linked into place) with mode 0600, so a crash never leaves half a key, two
 * racing creators end up with the same key, and the PeerId is the same on every restart.
 */
export async function loadOrCreateIdentity (dir: string): Promise<{ privateKey: PrivateKey, created: boolean }> {
  await mkdir(dir, { recursive: true, mode: 0o700 })
  const file = join(dir, IDENTITY_FILE)
  const existing = await readKey(file)
  if (existing !== undefined) {
    return { privateKey: existing, created: false }
  }
  const privateKey = await generateKeyPair('Ed25519')
  const tmp = `${file}.${randomBytes(6).toString('hex')}.tmp`
  const handle = await open(tmp, 'wx', 0o600)
  try {
    await handle.writeFile(privateKeyToProtobuf(privateKey))
    await handle.sync()
  } finally {
    await handle.close()
  }
  try {
    // "create if absent" must be atomic: a check followed by rename lets two racing creators both
    // win (rename overwrites) and hand out different keys. link(2) fails with EEXIST instead.
    if (!await publish(tmp, file)) {
      const raced = await readKey(file)
      if (raced === undefined) throw new IdentityError(`identity key ${file} vanished while being created`)
      return { privateKey: raced, created: false }
    }
  } finally {
    await unlink(tmp).catch(() => {})
  }
  await chmod(file, 0o600)
  return { privateKey, created: true }
}

/** Move `tmp` to `file` unless `file` exists; false if it does. */
async function publish (tmp: string, file: string): Promise<boolean> {
  try {
    await link(tmp, file)
    return true
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    if (code === 'EEXIST') return false
    if (code !== 'EPERM' && code !== 'ENOTSUP' && code !== 'EOPNOTSUPP' && code !== 'ENOSYS') throw err
  }
  // a file system without hard links: best effort, not atomic
  if (await readKey(file) !== undefined) return false
  await rename(tmp, file)
  return true
}

async function readKey (file: string): Promise<PrivateKey | undefined> {
  let bytes: Uint8Array
  try {
    bytes = await readFile(file)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw new IdentityError(`cannot read identity key ${file}: ${(err as Error).message}`)
  }
  try {
    return privateKeyFromProtobuf(bytes)
  } catch (err) {
    throw new IdentityError(`identity key ${file} is corrupt: ${(err as Error).message}`)
  }
}
