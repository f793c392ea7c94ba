import { type Ed25519, ed25519, type SignatureCheck, sodiumModulePath, verifyOnThreadPool } from '@persona-mesh/protocol'
import { type BurstStats, BurstWorker } from './burst.js'

/** Checks signatures of a burst of receipts; `close()` ends its worker. */
export interface Verifier {
  check: SignatureCheck
  close: () => Promise<void>
  /** Where signatures were checked, when a worker may check them. */
  stats?: BurstStats
}

const KEY = 32
const SIGNATURE = 64

/** In the worker: an item is public key ‖ signature ‖ signed bytes; libsodium checks it. */
const VERIFY_SOURCE = `
const sodium = require(workerData.sodium)
const work = (item) => sodium.crypto_sign_verify_detached(item.subarray(${KEY}, ${KEY + SIGNATURE}), item.subarray(${KEY + SIGNATURE}), item.subarray(0, ${KEY}))
`

/**
 * How a node verifies the envelopes it receives. With libsodium, a burst is verified in one
 * worker thread ({@link BurstWorker}), a few alone on the event loop; that takes about 60 % of the
 * CPU that OpenSSL on libuv's thread pool takes, and on two cores the CPU is what delivery runs
 * short of. Without it (no build of `sodium-native` for the platform), OpenSSL verifies on the
 * thread pool, where a burst spreads over the cores.
 */
export function createVerifier (backend: Ed25519 = ed25519()): Verifier {
  const sodium = backend.name === 'libsodium' ? sodiumModulePath() : undefined
  if (sodium === undefined) return { check: verifyOnThreadPool, close: async () => {} }
  const { verify } = backend
  const burst = new BurstWorker<Uint8Array, boolean>({
    name: 'verifying',
    source: VERIFY_SOURCE,
    workerData: { sodium },
    inline: item => verify(item.subarray(KEY + SIGNATURE), item.subarray(0, KEY), item.subarray(KEY, KEY + SIGNATURE))
  })
  return {
    check: (message, publicKey, signature) => {
      if (publicKey.byteLength !== KEY || signature.byteLength !== SIGNATURE) return false
      // one buffer of its own per item: a view of a larger one would take all of it to the worker
      const item = new Uint8Array(KEY + SIGNATURE + message.byteLength)
      item.set(publicKey, 0)
      item.set(signature, KEY)
      item.set(message, KEY + SIGNATURE)
      return burst.run(item)
    },
    close: async () => { await burst.close() },
    stats: burst.stats
  }
}
