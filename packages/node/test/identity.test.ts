import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { privateKeyFromProtobuf } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import type { MeshNode } from '@persona-mesh/node'
import { createMeshNode, IdentityError, InvalidNameError, loadOrCreateIdentity, personaDir, validateName } from '@persona-mesh/node'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'

let home: string
const nodes: MeshNode[] = []

beforeEach(async () => {
  home = await mkdtemp(join(tmpdir(), 'pmesh-identity-'))
})

afterEach(async () => {
  await Promise.allSettled(nodes.splice(0).map(async n => { await n.stop() }))
  await rm(home, { recursive: true, force: true })
})

function thrown (fn: () => unknown): Error {
  try {
    fn()
  } catch (err) {
    return err as Error
  }
  throw new Error('expected a throw')
}

async function rejection (promise: Promise<unknown>): Promise<Error> {
  try {
    await promise
  } catch (err) {
    return err as Error
  }
  throw new Error('expected a rejection')
}

const peerIdOf = (key: Parameters<typeof peerIdFromPrivateKey>[0]): string => peerIdFromPrivateKey(key).toString()

describe('loadOrCreateIdentity', () => {
  it('creates identity.key with mode 0600 the first time, and loads the same key after', async () => {
    const dir = join(home, 'aria')
    const first = await loadOrCreateIdentity(dir)
    expect(first.created).toBe(true)
    expect(first.privateKey.type).toBe('Ed25519')
    const file = join(dir, 'identity.key')
    expect((await stat(file)).mode & 0o777).toBe(0o600)
    expect((await stat(dir)).mode & 0o077).toBe(0)
    // the file holds exactly that key
    expect(peerIdOf(privateKeyFromProtobuf(await readFile(file)))).toBe(peerIdOf(first.privateKey))

    const second = await loadOrCreateIdentity(dir)
    expect(second.created).toBe(false)
    expect(peerIdOf(second.privateKey)).toBe(peerIdOf(first.privateKey))
    expect(second.privateKey.equals(first.privateKey)).toBe(true)
    // no temp files left behind
    expect(await readdir(dir)).toEqual(['identity.key'])
  })

  it('gives racing creators one key, the one on disk', async () => {
    for (let round = 0; round < 5; round++) {
      const dir = join(home, `race-${round}`)
      const results = await Promise.all(Array.from({ length: 6 }, async () => await loadOrCreateIdentity(dir)))
      const onDisk = peerIdOf(privateKeyFromProtobuf(await readFile(join(dir, 'identity.key'))))
      expect(new Set(results.map(r => peerIdOf(r.privateKey)))).toEqual(new Set([onDisk]))
      expect(results.filter(r => r.created)).toHaveLength(1)
      expect(await readdir(dir)).toEqual(['identity.key'])
    }
  })

  it.each([
    ['garbage', Buffer.from('this is not a key')],
    ['an empty file', Buffer.alloc(0)],
    ['a truncated key', Buffer.from([0x08, 0x01, 0x12, 0x40, 0x01, 0x02])]
  ])('refuses a corrupt key file (%s) with IdentityError and leaves it alone', async (_, bytes) => {
    const dir = join(home, 'broken')
    await mkdir(dir, { recursive: true })
    await writeFile(join(dir, 'identity.key'), bytes)
    const err = await rejection(loadOrCreateIdentity(dir))
    expect(err).toBeInstanceOf(IdentityError)
    expect(err.name).toBe('IdentityError')
    expect(err.message).toMatch(/corrupt/)
    expect(await readFile(join(dir, 'identity.key'))).toEqual(bytes)
  })

  it('refuses an identity.key it cannot read with IdentityError', async () => {
    const dir = join(home, 'unreadable')
    await mkdir(join(dir, 'identity.key'), { recursive: true }) // a directory where the file should be
    const err = await rejection(loadOrCreateIdentity(dir))
    expect(err).toBeInstanceOf(IdentityError)
    expect(err.message).toMatch(/cannot read/)
  })
})

describe('validateName', () => {
  it.each(['a', 'aria', 'Aria-2', 'x_y', '0', 'a'.repeat(64)])('accepts %j', (name) => {
    expect(validateName(name)).toBe(name)
  })

  it.each(['../x', '', 'a'.repeat(65), 'a/b', '.', '..', '.hidden', '-flag', '_x', 'a b', 'a\\b', 'a\n', 'é', 'a\0b'])('refuses %j with InvalidNameError', (name) => {
    const err = thrown(() => validateName(name))
    expect(err).toBeInstanceOf(InvalidNameError)
    expect(err.name).toBe('InvalidNameError')
  })

  it('keeps persona directories inside the home', () => {
    expect(personaDir(home, 'aria')).toBe(join(home, 'aria'))
    expect(thrown(() => personaDir(home, '../escape'))).toBeInstanceOf(InvalidNameError)
  })

  it('createMeshNode refuses a bad name before touching the disk', async () => {
    const err = await rejection(createMeshNode({ name: '../x', home, mdns: false, listen: ['/ip4/127.0.0.1/tcp/0'] }))
    expect(err).toBeInstanceOf(InvalidNameError)
    expect(await readdir(home)).toEqual([])
  })
})

describe('createMeshNode identity', () => {
  it('keeps its PeerId across a stop and a new node on the same home and name', async () => {
    const init = { name: 'aria', home, mdns: false, listen: ['/ip4/127.0.0.1/tcp/0'] }
    const first = await createMeshNode(init)
    nodes.push(first)
    expect(first.isStarted).toBe(true)
    expect(first.dataDir).toBe(join(home, 'aria'))
    const peerId = first.peerId
    expect(first.libp2p.peerId.toString()).toBe(peerId)
    await first.stop()

    const second = await createMeshNode(init)
    nodes.push(second)
    expect(second.isStarted).toBe(true)
    expect(second.peerId).toBe(peerId)
    expect(second.libp2p.peerId.toString()).toBe(peerId)
    expect(peerIdOf(privateKeyFromProtobuf(await readFile(join(home, 'aria', 'identity.key'))))).toBe(peerId)

    // another name on the same home is another persona
    const other = await createMeshNode({ ...init, name: 'bo' })
    nodes.push(other)
    expect(other.peerId).not.toBe(peerId)
  })
})
