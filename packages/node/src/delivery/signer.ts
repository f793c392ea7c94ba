import { createPrivateKey, sign as cryptoSign, type KeyObject } from 'node:crypto'
import { Worker } from 'node:worker_threads'
import type { Ed25519PrivateKey, PrivateKey } from '@libp2p/interface'
import { logger } from '@libp2p/logger'

const log = logger('persona-mesh:signer')

/** Signatures asked for in one turn of the event loop from which on they go to the worker. */
export const WORKER_BATCH = 16

/** A private key whose signatures may come from a worker thread; `close()` ends the worker. */
export type Signer = PrivateKey & { close(): Promise<void> }

type SignInput = Parameters<Ed25519PrivateKey['sign']>[0]
type SignOptions = Parameters<Ed25519PrivateKey['sign']>[1]

interface Request {
  data: Uint8Array
  resolve: (signature: Uint8Array) => void
  reject: (err: Error) => void
}

/** The worker: our key, imported once; a batch of byte strings in, their signatures out, in order. */
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads')
const { createPrivateKey, sign } = require('node:crypto')
const key = createPrivateKey({ format: 'jwk', key: workerData.jwk })
parentPort.on('message', ({ id, data }) => {
  let signatures
  try {
    signatures = data.map(d => sign(null, d, key))
  } catch (err) {
    parentPort.postMessage({ id, error: String(err && err.message || err) })
    return
  }
  parentPort.postMessage({ id, signatures })
})
`

/**
 * How a node signs envelopes. An Ed25519 key signs with a `KeyObject` imported once (libp2p's
 * key imports the raw key on every signature, which cost about as much as signing). A burst of
 * sends (at least {@link WORKER_BATCH} signatures asked for in one turn of the event loop) is
 * signed in a worker thread instead: at ~25-40 µs a signature, signing was the largest single
 * cost on a sending node's event loop. Fewer are signed at once, on the event loop, so one send
 * never waits for a worker (unless the worker still has earlier ones: signatures are handed out in
 * the order they were asked for). The worker starts with the first burst (which is signed here while it
 * boots); if it fails, its work is signed here and no more goes to it. Ed25519 signatures are
 * deterministic: the bytes are the same whoever signs. Other key types sign as they are.
 */
export function createSigner (privateKey: PrivateKey): Signer {
  if (privateKey.type !== 'Ed25519' || privateKey.raw.byteLength !== 64) return asIs(privateKey)
  const jwk = {
    kty: 'OKP',
    crv: 'Ed25519',
    d: Buffer.from(privateKey.raw.subarray(0, 32)).toString('base64url'),
    x: Buffer.from(privateKey.publicKey.raw).toString('base64url')
  }
  let keyObject: KeyObject
  try {
    keyObject = createPrivateKey({ format: 'jwk', key: jwk })
  } catch {
    return asIs(privateKey)
  }
  return new BurstSigner(privateKey, keyObject, jwk)
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
  private queue: Request[] = []
  private worker: Worker | undefined
  private ready = false
  /** The worker failed or the signer was closed: everything is signed here. */
  private inline = false
  private nextBatch = 0
  private readonly sent = new Map<number, Request[]>()

  constructor (private readonly key: Ed25519PrivateKey, private readonly keyObject: KeyObject, private readonly jwk: Record<string, string>) {}

  get raw (): Uint8Array { return this.key.raw }
  get publicKey (): Ed25519PrivateKey['publicKey'] { return this.key.publicKey }

  equals (key?: unknown): boolean {
    return this.key.equals(key)
  }

  sign (message: SignInput, options?: SignOptions): Uint8Array | Promise<Uint8Array> {
    options?.signal?.throwIfAborted()
    const data = message instanceof Uint8Array ? message : message.subarray()
    if (this.inline) return this.signHere(data)
    return new Promise<Uint8Array>((resolve, reject) => {
      this.queue.push({ data, resolve, reject })
      if (this.queue.length === 1) setImmediate(() => { this.dispatch() })
    })
  }

  async close (): Promise<void> {
    this.inline = true
    const worker = this.worker
    this.worker = undefined
    this.signHereAll([...this.queue.splice(0), ...this.takeSent()])
    await worker?.terminate()
  }

  private signHere (data: Uint8Array): Uint8Array {
    const sig = cryptoSign(null, data, this.keyObject)
    return new Uint8Array(sig.buffer, sig.byteOffset, sig.byteLength)
  }

  private signHereAll (requests: Request[]): void {
    for (const r of requests) {
      try {
        r.resolve(this.signHere(r.data))
      } catch (err) {
        r.reject(err as Error)
      }
    }
  }

  private dispatch (): void {
    const batch = this.queue
    this.queue = []
    if (batch.length === 0) return
    // signatures come back in the order they were asked for (sends queue in that order): a small
    // batch is signed here only when the worker has nothing outstanding
    if (this.inline || (batch.length < WORKER_BATCH && this.sent.size === 0)) {
      this.signHereAll(batch)
      return
    }
    if (this.worker === undefined) this.startWorker()
    if (!this.ready) {
      this.signHereAll(batch)
      return
    }
    const id = this.nextBatch++
    this.sent.set(id, batch)
    this.worker!.postMessage({ id, data: batch.map(r => r.data) })
  }

  private startWorker (): void {
    const worker = new Worker(WORKER_SOURCE, { eval: true, workerData: { jwk: this.jwk } })
    worker.unref()
    this.worker = worker
    worker.on('online', () => { this.ready = true })
    worker.on('message', (msg: { id: number, signatures?: Uint8Array[], error?: string }) => {
      const batch = this.sent.get(msg.id)
      this.sent.delete(msg.id)
      if (batch === undefined) return
      if (msg.signatures === undefined || msg.signatures.length !== batch.length) {
        log.error('signing worker failed a batch: %s', msg.error)
        this.signHereAll(batch)
        return
      }
      batch.forEach((r, i) => { r.resolve(msg.signatures![i]!) })
    })
    const fail = (err: Error): void => {
      if (this.worker !== worker) return
      log.error('signing worker stopped, signing on the event loop from now on: %e', err)
      this.inline = true
      this.worker = undefined
      this.signHereAll(this.takeSent())
    }
    worker.on('error', fail)
    worker.on('messageerror', fail)
    worker.on('exit', (code) => { fail(new Error(`exited with code ${code}`)) })
  }

  private takeSent (): Request[] {
    const all = [...this.sent.values()].flat()
    this.sent.clear()
    return all
  }
}
