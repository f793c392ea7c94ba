import { type Ed25519, ed25519 } from '@persona-mesh/protocol'
import type { Ed25519PrivateKey, PrivateKey } from '@libp2p/interface'

type SignInput = Parameters<Ed25519PrivateKey['sign']>[0]
type SignOptions = Parameters<Ed25519PrivateKey['sign']>[1]

/**
 * How a node signs envelopes. An Ed25519 key signs with the Ed25519 implementation in use
 * (libsodium where it loads; libp2p's key would import itself on every signature, which costs
 * about as much as signing), on the event loop: a burst of sends is batch-sealed under one
 * signature (`EnvelopeSealer`), so there is about one signature a burst to make. Ed25519
 * signatures are deterministic: the bytes are the same whoever signs. Other key types sign as
 * they are.
 */
export function createSigner (privateKey: PrivateKey, backend: Ed25519 = ed25519()): PrivateKey {
  if (privateKey.type !== 'Ed25519' || privateKey.raw.byteLength !== 64) return privateKey
  const secretKey = Uint8Array.from(privateKey.raw)
  const { sign } = backend
  try {
    sign(Uint8Array.of(0), secretKey)
  } catch {
    return privateKey
  }
  return new BackendSigner(privateKey, (data) => sign(data, secretKey))
}

class BackendSigner implements Ed25519PrivateKey {
  readonly type = 'Ed25519' as const

  constructor (private readonly key: Ed25519PrivateKey, private readonly signWith: (data: Uint8Array) => Uint8Array) {}

  get raw (): Uint8Array { return this.key.raw }
  get publicKey (): Ed25519PrivateKey['publicKey'] { return this.key.publicKey }

  equals (key?: unknown): boolean {
    return this.key.equals(key)
  }

  sign (message: SignInput, options?: SignOptions): Uint8Array {
    options?.signal?.throwIfAborted()
    return this.signWith(message instanceof Uint8Array ? message : message.subarray())
  }
}
