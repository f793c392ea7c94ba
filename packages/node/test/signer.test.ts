import { generateKeyPair } from '@libp2p/crypto/keys'
import type { PrivateKey } from '@libp2p/interface'
import { type Ed25519, libsodium, openssl } from '@persona-mesh/protocol'
import { beforeAll, describe, expect, it } from 'vitest'
import { type BurstWorker, WORKER_BATCH } from '../src/delivery/burst.js'
import { createSigner } from '../src/delivery/signer.js'

let key: PrivateKey

beforeAll(async () => {
  key = await generateKeyPair('Ed25519')
})

function messages (n: number, tag: string): Uint8Array[] {
  return Array.from({ length: n }, (_, i) => new TextEncoder().encode(`${tag}-${i}-${'x'.repeat(i % 50)}`))
}

describe('envelope signer', () => {
  it.each([['libsodium', libsodium()!], ['OpenSSL', openssl]] as Array<[string, Ed25519]>)('with %s, signs bursts (in the worker) and singles exactly as the key does', async (_, backend) => {
    const signer = createSigner(key, backend)
    try {
      // three bursts: the first is signed here while the worker boots, the later ones there
      for (let round = 0; round < 3; round++) {
        const data = messages(WORKER_BATCH * 2, `burst${round}`)
        // a view into a larger buffer, as a caller may hand over
        const big = new Uint8Array(1000).fill(9)
        data.push(big.subarray(100, 200))
        const signatures = await Promise.all(data.map(async d => await signer.sign(d)))
        for (const [i, d] of data.entries()) {
          expect(Buffer.from(signatures[i]!).equals(Buffer.from(await key.sign(d)))).toBe(true)
        }
        await new Promise(resolve => setTimeout(resolve, 50))
      }
      // the worker signed some (a broken worker script would leave it all to the fallback here)
      expect((signer as unknown as { burst: BurstWorker<Uint8Array, Uint8Array> }).burst.stats.inWorker).toBeGreaterThan(0)
      const single = new TextEncoder().encode('single')
      expect(Buffer.from(await signer.sign(single)).equals(Buffer.from(await key.sign(single)))).toBe(true)
    } finally {
      await signer.close()
    }
    const late = new TextEncoder().encode('after close')
    expect(await key.publicKey.verify(late, await signer.sign(late))).toBe(true)
  })

  it('a key of another type signs as it is', async () => {
    const secp = await generateKeyPair('secp256k1')
    const signer = createSigner(secp)
    const data = new TextEncoder().encode('secp')
    expect(signer.type).toBe('secp256k1')
    expect(await secp.publicKey.verify(data, await signer.sign(data))).toBe(true)
    await signer.close()
  })
})
