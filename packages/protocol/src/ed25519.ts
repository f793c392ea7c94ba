import { createPrivateKey, createPublicKey, type KeyObject, sign as cryptoSign, verify as cryptoVerify } from 'node:crypto'
import { createRequire } from 'node:module'
import { bytesKey, Lru } from './lru.js'

/**
 * Ed25519 over raw keys, synchronous. Two implementations give the same signatures (Ed25519 is
 * deterministic) and accept the signatures honest signers make:
 *
 * - `libsodium` (the `sodium-native` package) verifies in ~60 % of the CPU time OpenSSL takes on
 *   this project's benchmark machines (64 against 106 µs a signature) and signs a little faster.
 *   It is also stricter: it refuses public keys and `R` points of small order and non-canonical
 *   encodings, which OpenSSL accepts and no honest key or signature has.
 * - `openssl` (`node:crypto`) is always there: the fallback where `sodium-native` has no build for
 *   the platform, or when `PMESH_ED25519=openssl` asks for it.
 */
export interface Ed25519 {
  readonly name: 'libsodium' | 'openssl'
  /** Whether `signature` (64 bytes) is `publicKey`'s (32 bytes) over `message`. Malformed input is `false`. */
  verify: (message: Uint8Array, publicKey: Uint8Array, signature: Uint8Array) => boolean
  /** `secretKey`: 64 bytes, seed then public key (libp2p's and libsodium's raw form). */
  sign: (message: Uint8Array, secretKey: Uint8Array) => Uint8Array
}

export const PUBLIC_KEY_LENGTH = 32
export const SECRET_KEY_LENGTH = 64
export const SIGNATURE_LENGTH = 64

/** Most OpenSSL key objects kept of each kind. */
export const KEY_OBJECT_CACHE_SIZE = 1024

const base64url = (bytes: Uint8Array): string => Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('base64url')

// importing a raw key costs about as much as verifying with it: each is imported once
const publicKeys = new Lru<KeyObject>(KEY_OBJECT_CACHE_SIZE)
const privateKeys = new Lru<KeyObject>(KEY_OBJECT_CACHE_SIZE)

function publicKeyObject (raw: Uint8Array): KeyObject {
  return publicKeys.getOr(bytesKey(raw), () => createPublicKey({ format: 'jwk', key: { kty: 'OKP', crv: 'Ed25519', x: base64url(raw) } }))
}

function privateKeyObject (raw: Uint8Array): KeyObject {
  return privateKeys.getOr(bytesKey(raw), () => createPrivateKey({
    format: 'jwk',
    key: { kty: 'OKP', crv: 'Ed25519', d: base64url(raw.subarray(0, 32)), x: base64url(raw.subarray(32)) }
  }))
}

export const openssl: Ed25519 = {
  name: 'openssl',
  verify (message, publicKey, signature) {
    if (publicKey.byteLength !== PUBLIC_KEY_LENGTH || signature.byteLength !== SIGNATURE_LENGTH) return false
    try {
      return cryptoVerify(null, message, publicKeyObject(publicKey), signature)
    } catch {
      return false
    }
  },
  sign (message, secretKey) {
    checkSecretKey(secretKey)
    const signature = cryptoSign(null, message, privateKeyObject(secretKey))
    return new Uint8Array(signature.buffer, signature.byteOffset, signature.byteLength)
  }
}

/** OpenSSL verification on libuv's thread pool: for bursts where libsodium is not available. */
export async function verifyOnThreadPool (message: Uint8Array, publicKey: Uint8Array, signature: Uint8Array): Promise<boolean> {
  if (publicKey.byteLength !== PUBLIC_KEY_LENGTH || signature.byteLength !== SIGNATURE_LENGTH) return false
  let key: KeyObject
  try {
    key = publicKeyObject(publicKey)
  } catch {
    return false
  }
  return await new Promise<boolean>(resolve => {
    cryptoVerify(null, message, key, signature, (err, valid) => { resolve(err == null && valid) })
  })
}

/** OpenSSL verification keys cached (tests). */
export function cachedOpensslKeys (): number {
  return publicKeys.size
}

function checkSecretKey (secretKey: Uint8Array): void {
  if (secretKey.byteLength !== SECRET_KEY_LENGTH) throw new TypeError(`an Ed25519 secret key must be ${SECRET_KEY_LENGTH} bytes`)
}

/** The part of `sodium-native` used here. */
interface Sodium {
  crypto_sign_detached: (signature: Uint8Array, message: Uint8Array, secretKey: Uint8Array) => void
  crypto_sign_verify_detached: (signature: Uint8Array, message: Uint8Array, publicKey: Uint8Array) => boolean
  crypto_hash_sha256?: (out: Uint8Array, message: Uint8Array) => void
}

interface SodiumModule { sodium: Sodium, path: string }

let loaded: SodiumModule | null | undefined

function loadSodium (): SodiumModule | undefined {
  if (loaded === undefined) {
    loaded = null
    try {
      const require = createRequire(import.meta.url)
      const path = require.resolve('sodium-native')
      const sodium = require(path) as Sodium
      if (typeof sodium.crypto_sign_verify_detached === 'function' && typeof sodium.crypto_sign_detached === 'function') {
        loaded = { sodium, path }
      }
    } catch {
      // no build for this platform: OpenSSL it is
    }
  }
  return loaded ?? undefined
}

let libsodiumBackend: Ed25519 | undefined

/** The libsodium implementation, or `undefined` where `sodium-native` does not load. */
export function libsodium (): Ed25519 | undefined {
  const mod = loadSodium()
  if (mod === undefined) return undefined
  const { sodium } = mod
  libsodiumBackend ??= {
    name: 'libsodium',
    verify (message, publicKey, signature) {
      if (publicKey.byteLength !== PUBLIC_KEY_LENGTH || signature.byteLength !== SIGNATURE_LENGTH) return false
      return sodium.crypto_sign_verify_detached(signature, message, publicKey)
    },
    sign (message, secretKey) {
      checkSecretKey(secretKey)
      const signature = new Uint8Array(SIGNATURE_LENGTH)
      sodium.crypto_sign_detached(signature, message, secretKey)
      return signature
    }
  }
  return libsodiumBackend
}

/**
 * Where `sodium-native` loads from, for worker threads to load it themselves (they cannot share
 * this thread's module); `undefined` where it does not load.
 */
export function sodiumModulePath (): string | undefined {
  return loadSodium()?.path
}

/** libsodium's SHA-256 (`out` of 32 bytes), or `undefined` where `sodium-native` does not load. */
export function sodiumHash (): ((out: Uint8Array, message: Uint8Array) => void) | undefined {
  return loadSodium()?.sodium.crypto_hash_sha256
}

let chosen: Ed25519 | undefined

/** The implementation in use: libsodium where it loads, unless `PMESH_ED25519=openssl`. */
export function ed25519 (): Ed25519 {
  chosen ??= (process.env.PMESH_ED25519 === 'openssl' ? undefined : libsodium()) ?? openssl
  return chosen
}
