import { type MessageEnvelope, readStoredEnvelope, sealEnvelope, sealEnvelopes } from '@persona-mesh/protocol'
import type { PrivateKey } from '@libp2p/interface'

/** Most envelopes sealed under one signature: a proof of 7 hashes (224 bytes) per envelope. */
export const SEAL_BATCH = 128

interface Request {
  envelope: MessageEnvelope
  resolve: (bytes: Uint8Array) => void
  reject: (err: Error) => void
}

/**
 * Seals a node's outgoing envelopes. What is asked for in one turn of the event loop (a burst
 * of sends: a window of acks answered, a task's events) is sealed together, up to
 * {@link SEAL_BATCH} under one signature ({@link sealEnvelopes}), so the signer signs, and each
 * receiver verifies, once a burst instead of once a message. A send alone is sealed alone.
 */
export class EnvelopeSealer {
  private queue: Request[] = []

  constructor (private readonly key: PrivateKey, private readonly maxSize: number) {}

  seal (envelope: MessageEnvelope): Promise<Uint8Array> {
    return new Promise<Uint8Array>((resolve, reject) => {
      this.queue.push({ envelope, resolve, reject })
      if (this.queue.length === 1) setImmediate(() => { this.dispatch() })
    })
  }

  /** The envelope in `sealed` (one of ours, as queued) sealed alone: for a receiver that takes no batches. */
  async sealAlone (sealed: Uint8Array): Promise<Uint8Array> {
    return await sealEnvelope(readStoredEnvelope(sealed), this.key, { maxSize: this.maxSize })
  }

  private dispatch (): void {
    const all = this.queue
    this.queue = []
    for (let i = 0; i < all.length; i += SEAL_BATCH) void this.sealBatch(all.slice(i, i + SEAL_BATCH))
  }

  private async sealBatch (batch: Request[]): Promise<void> {
    const options = { maxSize: this.maxSize }
    let sealed: Uint8Array[]
    try {
      sealed = await sealEnvelopes(batch.map(r => r.envelope), this.key, options)
    } catch {
      // one of them cannot be sealed (too large, say): each alone, so each send gets its own answer
      for (const r of batch) sealEnvelope(r.envelope, this.key, options).then(r.resolve, r.reject)
      return
    }
    batch.forEach((r, i) => { r.resolve(sealed[i]!) })
  }
}
