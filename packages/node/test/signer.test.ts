import { generateKeyPair } from '@libp2p/crypto/keys'
import { describe, expect, it } from 'vitest'
import { createSigner, type Signer, WORKER_BATCH } from '../src/delivery/signer.js'
import { waitFor } from './harness.js'

interface Internals {
  worker?: { postMessage: (msg: unknown) => void, terminate: () => Promise<number> }
  ready: boolean
  inline: boolean
}

const internals = (signer: Signer): Internals => signer as unknown as Internals

function messages (n: number, tag: string): Uint8Array[] {
  return Array.from({ length: n }, (_, i) => new TextEncoder().encode(`${tag}-${i}-${'x'.repeat(i % 50)}`))
}

/** Sign all of `data` in one turn of the event loop; the signatures in the order they resolved. */
async function burst (signer: Signer, data: Uint8Array[]): Promise<{ signatures: Uint8Array[], order: number[] }> {
  const order: number[] = []
  const signatures = await Promise.all(data.map(async (d, i) => {
    const sig = await signer.sign(d)
    order.push(i)
    return sig
  }))
  return { signatures, order }
}

describe('envelope signer', () => {
  it('signs a burst in a worker once it is up, singles on the event loop: the same signatures, in the order asked', async () => {
    const key = await generateKeyPair('Ed25519')
    const signer = createSigner(key)
    try {
      // the first burst starts the worker and is signed here meanwhile
      const first = await burst(signer, messages(WORKER_BATCH * 2, 'a'))
      expect(internals(signer).worker).toBeDefined()
      await waitFor(() => internals(signer).ready, 'the signing worker up')

      const worker = internals(signer).worker!
      let posted = 0
      const post = worker.postMessage.bind(worker)
      worker.postMessage = (msg) => { posted++; post(msg) }
      const data = messages(WORKER_BATCH * 4, 'b')
      const second = burst(signer, data)
      // asked for in the next turn, while the burst is with the worker: it must not overtake it
      await new Promise(resolve => setImmediate(resolve))
      let burstDone = false
      void second.then(() => { burstDone = true })
      const singleDoneFirst = await Promise.resolve(signer.sign(new TextEncoder().encode('single'))).then(() => !burstDone)
      const { signatures, order } = await second
      expect(posted).toBeGreaterThan(0)
      expect(order).toEqual([...order].sort((a, b) => a - b))
      expect(singleDoneFirst).toBe(false)

      for (const [i, d] of data.entries()) {
        expect(await key.publicKey.verify(d, signatures[i]!)).toBe(true)
        // Ed25519 is deterministic: exactly what the key itself signs
        expect(Buffer.from(signatures[i]!).equals(Buffer.from(await key.sign(d)))).toBe(true)
      }
      expect(await key.publicKey.verify(messages(1, 'a')[0]!, first.signatures[0]!)).toBe(true)

      // fewer than a burst, nothing outstanding: signed here, no message to the worker
      posted = 0
      const few = messages(WORKER_BATCH - 1, 'c')
      const small = await burst(signer, few)
      expect(posted).toBe(0)
      for (const [i, d] of few.entries()) expect(await key.publicKey.verify(d, small.signatures[i]!)).toBe(true)
    } finally {
      await signer.close()
    }
  })

  it('a worker that dies takes no signature with it: what it held and everything after is signed here', async () => {
    const key = await generateKeyPair('Ed25519')
    const signer = createSigner(key)
    try {
      await burst(signer, messages(WORKER_BATCH, 'warm'))
      await waitFor(() => internals(signer).ready, 'the signing worker up')
      const data = messages(WORKER_BATCH * 3, 'd')
      const pending = burst(signer, data)
      // the batch is posted on the next turn; kill the worker right after that
      await new Promise(resolve => setImmediate(resolve))
      await internals(signer).worker!.terminate()
      const { signatures } = await pending
      for (const [i, d] of data.entries()) expect(await key.publicKey.verify(d, signatures[i]!)).toBe(true)
      expect(internals(signer).inline).toBe(true)
      const after = await signer.sign(new TextEncoder().encode('after'))
      expect(await key.publicKey.verify(new TextEncoder().encode('after'), after)).toBe(true)
    } finally {
      await signer.close()
    }
  })

  it('close() signs what is waiting, ends the worker, and later signatures are made here', async () => {
    const key = await generateKeyPair('Ed25519')
    const signer = createSigner(key)
    await burst(signer, messages(WORKER_BATCH, 'warm'))
    await waitFor(() => internals(signer).ready, 'the signing worker up')
    const data = messages(WORKER_BATCH * 2, 'e')
    const pending = burst(signer, data)
    await signer.close()
    const { signatures } = await pending
    for (const [i, d] of data.entries()) expect(await key.publicKey.verify(d, signatures[i]!)).toBe(true)
    expect(internals(signer).worker).toBeUndefined()
    const late = await signer.sign(new TextEncoder().encode('late'))
    expect(await key.publicKey.verify(new TextEncoder().encode('late'), late)).toBe(true)
  })

  it('a key of another type signs as it is', async () => {
    const key = await generateKeyPair('secp256k1')
    const signer = createSigner(key)
    const data = new TextEncoder().encode('secp')
    expect(signer.type).toBe('secp256k1')
    expect(await key.publicKey.verify(data, await signer.sign(data))).toBe(true)
    await signer.close()
  })
})
