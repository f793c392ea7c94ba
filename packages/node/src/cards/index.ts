import type { Card, CapabilityInit, ToolSpec } from '@persona-mesh/protocol'

export { CardService, DHT_DATASTORE_PREFIX, type CardServiceInit, type CardComponents } from './card-service.js'
export { searchCards, type SearchHit } from './search.js'

/** What a persona says about itself; the node adds identity, addresses, times and signature. */
export interface CardProfile {
  description?: string
  capabilities?: Array<CapabilityInit | string>
  tools?: ToolSpec[]
  topics?: string[]
}

/** A card that passed verification, with where it came from. */
export interface VerifiedCard {
  card: Card
  /** The sealed bytes exactly as verified (for re-publishing). */
  bytes: Uint8Array
  receivedAt: number
  source: 'self' | 'direct' | 'gossip' | 'dht' | 'store'
}
