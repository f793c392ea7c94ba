import { bytesSub, type Db, jsonSub, keyPart, plainBytes, type Sub, timestamp } from './db.js'
import { InvalidRecordError } from './errors.js'
import type { AbortOptions, CardCache, CardInit, CardRecord } from './index.js'
import type { Serial } from './serial.js'

type StoredCard = Omit<CardRecord, 'bytes'>

export interface CardCacheInit {
  db: Db
  serial: Serial
  guard: () => void
}

/** Verified cards by PeerId, highest seq wins. */
export class LevelCardCache implements CardCache {
  private readonly cards: Sub<StoredCard>
  private readonly bytesByPeer: Sub<Uint8Array>

  constructor (private readonly init: CardCacheInit) {
    this.cards = jsonSub(init.db, 'cd')
    this.bytesByPeer = bytesSub(init.db, 'cdb')
  }

  async put (peerId: string, card: CardInit, options: AbortOptions = {}): Promise<boolean> {
    this.init.guard()
    keyPart(peerId, 'peerId')
    timestamp(card.seq, 'card seq')
    timestamp(card.verifiedAt, 'verifiedAt')
    if (!(card.bytes instanceof Uint8Array)) throw new InvalidRecordError('card bytes must be a Uint8Array')
    if (typeof card.card !== 'object' || card.card === null || Array.isArray(card.card)) {
      throw new InvalidRecordError('card must be an object')
    }
    return await this.init.serial.run(async txn => {
      const held = await txn.get(this.cards, peerId)
      if (held !== undefined && held.seq > card.seq) {
        return false
      }
      txn.put(this.cards, peerId, { peerId, seq: card.seq, card: card.card, verifiedAt: card.verifiedAt, storedAt: Date.now() })
      txn.put(this.bytesByPeer, peerId, card.bytes)
      return true
    }, options)
  }

  async get (peerId: string, options: AbortOptions = {}): Promise<CardRecord | undefined> {
    this.init.guard()
    options.signal?.throwIfAborted()
    keyPart(peerId, 'peerId')
    const [stored, bytes] = await Promise.all([this.cards.get(peerId), this.bytesByPeer.get(peerId)])
    return stored === undefined || bytes === undefined ? undefined : { ...stored, bytes: plainBytes(bytes) }
  }

  async list (options: AbortOptions = {}): Promise<CardRecord[]> {
    this.init.guard()
    const stored = await this.cards.values().all()
    options.signal?.throwIfAborted()
    const bytes = stored.length === 0 ? [] : await this.bytesByPeer.getMany(stored.map(s => s.peerId))
    const out: CardRecord[] = []
    stored.forEach((s, i) => {
      const b = bytes[i]
      if (b !== undefined) out.push({ ...s, bytes: plainBytes(b) })
    })
    return out
  }

  async delete (peerId: string, options: AbortOptions = {}): Promise<boolean> {
    this.init.guard()
    keyPart(peerId, 'peerId')
    return await this.init.serial.run(async txn => {
      if (await txn.get(this.cards, peerId) === undefined) {
        return false
      }
      txn.del(this.cards, peerId)
      txn.del(this.bytesByPeer, peerId)
      return true
    }, options)
  }
}
