import { generateKeyPair } from '@libp2p/crypto/keys'
import type { PrivateKey } from '@libp2p/interface'
import { afterEach, beforeAll, describe, expect, it, vi } from 'vitest'
import { cachedOpensslKeys, type Ed25519, ed25519, KEY_OBJECT_CACHE_SIZE, libsodium, openssl, sodiumModulePath, verifyOnThreadPool } from '../src/ed25519.js'

const sodium = libsodium()
let alice: PrivateKey
let bob: PrivateKey

beforeAll(async () => {
  alice = await generateKeyPair('Ed25519')
  bob = await generateKeyPair('Ed25519')
})

const text = (s: string): Uint8Array => new TextEncoder().encode(s)

describe('Ed25519 implementations', () => {
  it('libsodium loads on this platform and is the one in use (the fallback would cost delivery ~10 %)', () => {
    expect(sodium?.name).toBe('libsodium')
    expect(sodiumModulePath()).toMatch(/sodium-native/)
    expect(ed25519().name).toBe('libsodium')
  })

  it.each([['openssl', openssl], ['libsodium', sodium!]] as Array<[string, Ed25519]>)('%s signs exactly what the libp2p key signs, and verifies it', async (_, impl) => {
    for (const message of [new Uint8Array(0), text('a'), new Uint8Array(1000).fill(7), new Uint8Array(70_000).fill(3)]) {
      const signature = impl.sign(message, alice.raw)
      expect(signature.byteLength).toBe(64)
      expect(Buffer.from(signature).equals(Buffer.from(await alice.sign(message)))).toBe(true)
      expect(impl.verify(message, alice.publicKey.raw, signature)).toBe(true)
      expect(await alice.publicKey.verify(message, signature)).toBe(true)
    }
  })

  it.each([['openssl', openssl], ['libsodium', sodium!]] as Array<[string, Ed25519]>)('%s refuses a changed message, signature or key, and wrong lengths, with false', (_, impl) => {
    const message = text('pay bob 10')
    const signature = impl.sign(message, alice.raw)
    expect(impl.verify(text('pay bob 99'), alice.publicKey.raw, signature)).toBe(false)
    const flipped = signature.slice()
    flipped[10] ^= 0x01
    expect(impl.verify(message, alice.publicKey.raw, flipped)).toBe(false)
    expect(impl.verify(message, bob.publicKey.raw, signature)).toBe(false)
    expect(impl.verify(message, alice.publicKey.raw.subarray(0, 31), signature)).toBe(false)
    expect(impl.verify(message, alice.publicKey.raw, signature.subarray(0, 63))).toBe(false)
    expect(impl.verify(message, new Uint8Array(32).fill(0xff), signature)).toBe(false)
    expect(() => impl.sign(message, alice.raw.subarray(0, 32))).toThrow(TypeError)
  })

  it('each verifies what the other signs', () => {
    const message = text('across')
    expect(sodium!.verify(message, bob.publicKey.raw, openssl.sign(message, bob.raw))).toBe(true)
    expect(openssl.verify(message, bob.publicKey.raw, sodium!.sign(message, bob.raw))).toBe(true)
  })

  it('libsodium refuses the degenerate key OpenSSL lets by: the identity point "signs" every message', () => {
    const identity = new Uint8Array(32)
    identity[0] = 1
    // R = identity, S = 0: [0]B = R + [h]A holds for any message when A and R are the identity
    const signature = new Uint8Array(64)
    signature[0] = 1
    expect(openssl.verify(text('anything'), identity, signature)).toBe(true)
    expect(sodium!.verify(text('anything'), identity, signature)).toBe(false)
  })

  it('OpenSSL on the thread pool answers as OpenSSL does, and keeps at most KEY_OBJECT_CACHE_SIZE keys', async () => {
    const message = text('pooled')
    const signature = openssl.sign(message, alice.raw)
    expect(await verifyOnThreadPool(message, alice.publicKey.raw, signature)).toBe(true)
    expect(await verifyOnThreadPool(text('other'), alice.publicKey.raw, signature)).toBe(false)
    expect(await verifyOnThreadPool(message, alice.publicKey.raw.subarray(1), signature)).toBe(false)
    for (let i = 0; i < KEY_OBJECT_CACHE_SIZE + 5; i++) {
      const key = (await generateKeyPair('Ed25519')).publicKey.raw
      openssl.verify(message, key, signature)
    }
    expect(cachedOpensslKeys()).toBe(KEY_OBJECT_CACHE_SIZE)
    // alice's key was pushed out: imported again, still right
    expect(openssl.verify(message, alice.publicKey.raw, signature)).toBe(true)
  })
})

describe('PMESH_ED25519', () => {
  afterEach(() => {
    vi.unstubAllEnvs()
    vi.resetModules()
  })

  it('=openssl makes OpenSSL the one in use', async () => {
    vi.stubEnv('PMESH_ED25519', 'openssl')
    vi.resetModules()
    const fresh = await import('../src/ed25519.js')
    expect(fresh.ed25519().name).toBe('openssl')
  })
})
