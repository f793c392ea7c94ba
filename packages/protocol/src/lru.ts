/** At most `capacity` entries; when full, the least recently used one goes. */
export class Lru<V> {
  private readonly entries = new Map<string, V>()

  constructor (readonly capacity: number) {}

  /** The value kept for `key`, or what `make` gives (kept from now on). */
  getOr (key: string, make: () => V): V {
    let value = this.entries.get(key)
    if (value !== undefined) {
      // most recently used last: the first entry is the one to evict
      this.entries.delete(key)
    } else {
      value = make()
      if (this.entries.size >= this.capacity) this.entries.delete(this.entries.keys().next().value!)
    }
    this.entries.set(key, value)
    return value
  }

  delete (key: string): void {
    this.entries.delete(key)
  }

  get size (): number {
    return this.entries.size
  }
}

/** Bytes as a map key. */
export function bytesKey (bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('base64')
}
