import { generateKeyPair } from '@libp2p/crypto/keys'
import type { PrivateKey } from '@libp2p/interface'
import { type Ed25519, libsodium, openssl } from '@persona-mesh/protocol'
import { beforeAll, describe, expect, it } from 'vitest'
import { createSigner } from '../src/delivery/signer.js'

let key: PrivateKey

beforeAll(async () => {
  key = await generateKeyPair('Ed25519')
})

function messages (n: number, tag: string): Uint8Array[] {
  return Array.from({ length: n }, (_, i) => new TextEncoder().encode(`${tag}-${i}-${'x'.repeat(i % 50)}`))
}

describe('envelope signer', () => {
  it.each([['libsodium', libsodium()!], ['OpenSSL', openssl]] as Array<[string, Ed25519]>)('with %s, signs exactly as the key does', async (_, backend) => {
    const signer = createSigner(key, backend)
    expect(signer).not.toBe(key)
    expect(signer.type).toBe('Ed25519')
    expect(signer.publicKey.equals(key.publicKey)).toBe(true)
    const data = messages(20, backend.name)
    // a view into a larger buffer, as a caller may hand over
    data.push(new Uint8Array(1000).fill(9).subarray(100, 200))
    for (const d of data) {
      expect(Buffer.from(await signer.sign(d)).equals(Buffer.from(await key.sign(d)))).toBe(true)
    }
    const aborted = AbortSignal.abort()
    expect(() => signer.sign(data[0]!, { signal: aborted })).toThrow()
  })

  it('a key of another type signs as it is', async () => {
    const secp = await generateKeyPair('secp256k1')
    const signer = createSigner(secp)
    const data = new TextEncoder().encode('secp')
    expect(signer).toBe(secp)
    expect(await secp.publicKey.verify(data, await signer.sign(data))).toBe(true)
  })
})
