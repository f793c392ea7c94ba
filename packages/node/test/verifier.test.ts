import { generateKeyPair } from '@libp2p/crypto/keys'
import type { PrivateKey } from '@libp2p/interface'
import { type Ed25519, libsodium, openssl } from '@persona-mesh/protocol'
import { beforeAll, describe, expect, it } from 'vitest'
import { WORKER_BATCH } from '../src/delivery/burst.js'
import { createVerifier } from '../src/delivery/verifier.js'

let alice: PrivateKey
let bob: PrivateKey

beforeAll(async () => {
  alice = await generateKeyPair('Ed25519')
  bob = await generateKeyPair('Ed25519')
})

interface Case { message: Uint8Array, key: Uint8Array, signature: Uint8Array, valid: boolean }

/** Every third signature good; the others broken in a different way each. */
async function cases (n: number): Promise<Case[]> {
  const out: Case[] = []
  // keys and signatures as views into one frame, as the receiver has them
  const frame = new Uint8Array(n * 96)
  for (let i = 0; i < n; i++) {
    const message = new TextEncoder().encode(`envelope ${i} ${'y'.repeat(i)}`)
    const signature = await alice.sign(message)
    frame.set(alice.publicKey.raw, i * 96)
    frame.set(signature, i * 96 + 32)
    const key = frame.subarray(i * 96, i * 96 + 32)
    const sig = frame.subarray(i * 96 + 32, i * 96 + 96)
    switch (i % 3) {
      case 0: out.push({ message, key, signature: sig, valid: true }); break
      case 1: out.push({ message: new TextEncoder().encode(`envelope ${i}!`), key, signature: sig, valid: false }); break
      default: out.push({ message, key: bob.publicKey.raw, signature: sig, valid: false })
    }
  }
  return out
}

describe('envelope verifier', () => {
  it.each([['libsodium', libsodium()!], ['OpenSSL', openssl]] as Array<[string, Ed25519]>)('with %s, tells good signatures from bad in bursts and alone', async (_, backend) => {
    const verifier = createVerifier(backend)
    try {
      for (let round = 0; round < 3; round++) {
        const burst = await cases(WORKER_BATCH * 3)
        const answers = await Promise.all(burst.map(async c => await verifier.check(c.message, c.key, c.signature)))
        expect(answers).toEqual(burst.map(c => c.valid))
        await new Promise(resolve => setTimeout(resolve, 50))
      }
      // libsodium: the worker checked some (a broken worker script would leave it all to the fallback)
      if (backend.name === 'libsodium') expect(verifier.stats?.inWorker).toBeGreaterThan(0)
      else expect(verifier.stats).toBeUndefined()
      const [good, bad] = await cases(2)
      expect(await verifier.check(good!.message, good!.key, good!.signature)).toBe(true)
      expect(await verifier.check(bad!.message, bad!.key, bad!.signature)).toBe(false)
      expect(await verifier.check(good!.message, good!.key.subarray(1), good!.signature)).toBe(false)
      expect(await verifier.check(good!.message, good!.key, good!.signature.subarray(1))).toBe(false)
    } finally {
      await verifier.close()
    }
  })
})
