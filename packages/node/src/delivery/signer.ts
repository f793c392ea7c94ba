import { type Ed25519, ed25519, sodiumModulePath } from '@persona-mesh/protocol'
import { BurstWorker } from './burst.js'
import type { Ed25519PrivateKey, PrivateKey } from '@libp2p/interface'

/** A private key whose signatures may come from a worker thread; `close()` ends the worker. */
export type Signer = PrivateKey & { close(): Promise<void> }

type SignInput = Parameters<Ed25519PrivateKey['sign']>[0]
type SignOptions = Parameters<Ed25519PrivateKey['sign']>[1]

/** In the worker: `workerData.secretKey` signs, with libsodium if `workerData.sodium` names it, else with OpenSSL. */
const SIGN_SOURCE = `
let work
if (workerData.sodium !== undefined) {
  const sodium = require(workerData.sodium)
  work = (data) => {
    const signature = new Uint8Array(64)
    sodium.crypto_sign_detached(signature, data, workerData.secretKey)
    return signature
  }
} else {
  const { createPrivateKey, sign } = require('node:crypto')
  const b64 = (bytes) => Buffer.from(bytes).toString('base64url')
  const key = createPrivateKey({ format: 'jwk', key: { kty: 'OKP', crv: 'Ed25519', d: b64(workerData.secretKey.subarray(0, 32)), x: b64(workerData.secretKey.subarray(32)) } })
  work = (data) => sign(null, data, key)
}
`

/**
 * How a node signs envelopes. An Ed25519 key signs with the Ed25519 implementation in use
 * (libsodium where it loads; libp2p's key would import itself on every signature, which costs
 * about as much as signing), and a burst of sends is signed in a worker thread ({@link BurstWorker}):
 * at ~25-40 µs a signature, signing was the largest single cost on a sending node's event loop.
 * Signatures come back in the order they were asked for, so sends queue in that order. Ed25519
 * signatures are deterministic: the bytes are the same whoever signs. Other key types sign as
 * they are.
 */
export function createSigner (privateKey: PrivateKey, backend: Ed25519 = ed25519()): Signer {
  if (privateKey.type !== 'Ed25519' || privateKey.raw.byteLength !== 64) return asIs(privateKey)
  const secretKey = Uint8Array.from(privateKey.raw)
  const { sign } = backend
  try {
    sign(Uint8Array.of(0), secretKey)
  } catch {
    return asIs(privateKey)
  }
  return new BurstSigner(privateKey, new BurstWorker({
    name: 'signing',
    source: SIGN_SOURCE,
    workerData: { secretKey, sodium: backend.name === 'libsodium' ? sodiumModulePath() : undefined },
    inline: (data: Uint8Array) => sign(data, secretKey)
  }))
}

function asIs (privateKey: PrivateKey): Signer {
  return {
    type: privateKey.type,
    raw: privateKey.raw,
    publicKey: privateKey.publicKey,
    equals: (key?: unknown) => privateKey.equals(key),
    sign: (data: SignInput, options?: SignOptions) => privateKey.sign(data, options),
    close: async () => {}
  } as Signer
}

class BurstSigner implements Ed25519PrivateKey {
  readonly type = 'Ed25519' as const

  constructor (private readonly key: Ed25519PrivateKey, readonly burst: BurstWorker<Uint8Array, Uint8Array>) {}

  get raw (): Uint8Array { return this.key.raw }
  get publicKey (): Ed25519PrivateKey['publicKey'] { return this.key.publicKey }

  equals (key?: unknown): boolean {
    return this.key.equals(key)
  }

  sign (message: SignInput, options?: SignOptions): Uint8Array | Promise<Uint8Array> {
    options?.signal?.throwIfAborted()
    let data = message instanceof Uint8Array ? message : message.subarray()
    // a view of a larger buffer would take all of that buffer to the worker
    if (data.byteOffset !== 0 || data.byteLength !== data.buffer.byteLength) data = data.slice()
    return this.burst.run(data)
  }

  async close (): Promise<void> {
    await this.burst.close()
  }
}
