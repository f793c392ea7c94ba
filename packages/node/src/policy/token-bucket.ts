export interface RateLimit {
  /** Tokens added per second. */
  rate: number
  /** Most tokens held at once (the burst allowed after a quiet spell). */
  burst: number
}

interface Bucket {
  tokens: number
  updatedAt: number
}

/** Most peers tracked at once; the least recently refilled are forgotten first. */
const MAX_KEYS = 10_000

/**
 * Token buckets by key (a PeerId): each take costs one token; tokens refill at `rate` per second
 * up to `burst`. Memory is bounded: idle keys are dropped when the table is full (a dropped key
 * starts again with a full bucket, which is what an idle peer would have anyway).
 */
export class TokenBuckets {
  private readonly buckets = new Map<string, Bucket>()

  constructor (private readonly limit: RateLimit, private readonly now: () => number = Date.now) {}

  /** Take `n` tokens for `key`; `false` (taking none) when there are not enough. */
  take (key: string, n = 1): boolean {
    const now = this.now()
    let bucket = this.buckets.get(key)
    if (bucket === undefined) {
      if (this.buckets.size >= MAX_KEYS) {
        const oldest = this.buckets.keys().next().value
        if (oldest !== undefined) this.buckets.delete(oldest)
      }
      bucket = { tokens: this.limit.burst, updatedAt: now }
    } else {
      this.buckets.delete(key) // re-insert below: Map order is then least recently used first
      bucket.tokens = Math.min(this.limit.burst, bucket.tokens + ((now - bucket.updatedAt) / 1000) * this.limit.rate)
      bucket.updatedAt = now
    }
    this.buckets.set(key, bucket)
    if (bucket.tokens < n) return false
    bucket.tokens -= n
    return true
  }
}
