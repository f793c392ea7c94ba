import { setMaxListeners } from 'node:events'
import { logger } from '@libp2p/logger'
import { TopicValidatorResult } from '@libp2p/gossipsub'
import { Libp2pRecord } from '@libp2p/record'
import { Key } from 'interface-datastore'
import { base32 } from 'multiformats/bases/base32'
import { CID } from 'multiformats/cid'
import * as raw from 'multiformats/codecs/raw'
import { sha256 } from 'multiformats/hashes/sha2'
import { TypedEventEmitter } from 'main-event'
import {
  CARD_DHT_NAMESPACE,
  CARD_PROTOCOL,
  CARDS_TOPIC,
  CapabilitySchema,
  capabilityProviderText,
  cardDhtKey,
  DEFAULT_CARD_LIFETIME_MS,
  MAX_CARD_SIZE,
  openCard,
  sealCard,
  StaleRecordError,
  WIRE_VERSION
} from '@persona-mesh/protocol'
import { FrameChannel } from '../framing.js'
import type { CardProfile, VerifiedCard } from './index.js'
import type { GossipSub } from '@libp2p/gossipsub'
import type { Libp2p, PeerId, PrivateKey, Stream } from '@libp2p/interface'
import type { KadDHT } from '@libp2p/kad-dht'
import type { Datastore } from 'interface-datastore'
import type { Card } from '@persona-mesh/protocol'

const log = logger('persona-mesh:cards')

/** How long fetching a card directly from a peer may take. */
const FETCH_TIMEOUT_MS = 5_000
/** How long one DHT publication or lookup may take. */
const DHT_TIMEOUT_MS = 10_000
/** How much longer a provider query may run once it found a provider. */
const PROVIDER_GRACE_MS = 50
/** How many holders of a capability's provider list (ourselves included) must have answered before a search with results ends. */
const HOLDER_QUORUM = 3
/** Where kad-dht keeps its records in the libp2p datastore (its `datastorePrefix`, which we set). */
export const DHT_DATASTORE_PREFIX = '/dht'
/** Coalesce bursts of "publish now" (start, connects, updates) into one publication. */
const PUBLISH_DEBOUNCE_MS = 250

export interface CardComponents {
  libp2p: Libp2p<{ dht: KadDHT, pubsub: GossipSub }>
  privateKey: PrivateKey
  /** The datastore libp2p was given: the DHT keeps the records it holds for others there. */
  datastore: Datastore
}

export interface CardServiceInit {
  name: string
  profile?: CardProfile
  /** How long each issued card is valid; it is re-issued at half-life. @default 1 hour */
  lifetime?: number
  /** Protocols advertised in the card. */
  protocols: string[]
  /** Persistent cache to warm up from and write through to (read at every start). */
  cache?: CardCache
}

/** Where verified cards survive restarts (the store implements it). */
export interface CardCache {
  load(): Promise<Uint8Array[]>
  save(card: VerifiedCard): Promise<void>
}

export interface CardEvents {
  /** A new or newer verified card of another peer. */
  card: CustomEvent<VerifiedCard>
}

/** What happened to a card offered to `accept()`. */
export type AcceptOutcome = { status: 'new', card: VerifiedCard } | { status: 'duplicate', card: VerifiedCard } | { status: 'self', card: VerifiedCard }

/**
 * Capability cards: issues and re-issues this persona's signed card, publishes it four ways
 * (DHT record, DHT provider per capability, gossip, direct fetch on connect) and verifies and
 * caches everyone else's. A card is cached only if its signature, signer, expiry and version
 * check out and its `seq` is newer than the one held: replays and rollbacks are refused.
 */
export class CardService extends TypedEventEmitter<CardEvents> {
  private readonly cards = new Map<string, VerifiedCard>()
  private ownCard!: VerifiedCard
  private profile: CardProfile
  private readonly lifetime: number
  private refreshTimer?: ReturnType<typeof setTimeout>
  private publishTimer?: ReturnType<typeof setTimeout>
  private publishing?: Promise<void>
  private publishAgain = false
  private dhtPublishedSeq = -1
  private started = false
  private stopController = new AbortController()
  private readonly fetching = new Set<string>()
  private readonly onIdentify = (evt: CustomEvent<{ peerId: PeerId, protocols: string[] }>): void => {
    const { peerId, protocols } = evt.detail
    if (protocols.includes(CARD_PROTOCOL)) {
      this.fetchQuietly(peerId)
    }
  }
  private readonly onConnect = (): void => {
    if (this.dhtPublishedSeq !== this.ownCard.card.seq) this.schedulePublish()
  }

  constructor (private readonly components: CardComponents, private readonly init: CardServiceInit) {
    super()
    this.profile = init.profile ?? {}
    this.lifetime = init.lifetime ?? DEFAULT_CARD_LIFETIME_MS
  }

  get own (): VerifiedCard {
    return this.ownCard
  }

  async start (): Promise<void> {
    if (this.started) return
    this.stopController = new AbortController()
    const { libp2p } = this.components
    for (const bytes of await this.init.cache?.load() ?? []) {
      await this.accept(bytes, 'store').catch((err: Error) => { log('dropping cached card: %s', err.message) })
    }
    await this.issue()
    await libp2p.handle(CARD_PROTOCOL, (stream) => { this.serveCard(stream) }, { maxInboundStreams: 8, maxOutboundStreams: 8 })
    libp2p.services.dht.validators[CARD_DHT_NAMESPACE] = async (key, value) => { await this.validateDhtRecord(key, value) }
    libp2p.services.dht.selectors[CARD_DHT_NAMESPACE] = async (_key, records) => this.selectDhtRecord(records)
    libp2p.services.pubsub.topicValidators.set(CARDS_TOPIC, async (_peer, message) => this.validateGossip(message.data))
    libp2p.services.pubsub.subscribe(CARDS_TOPIC)
    libp2p.addEventListener('peer:identify', this.onIdentify)
    libp2p.addEventListener('peer:connect', this.onConnect)
    this.started = true
    this.schedulePublish()
  }

  async stop (): Promise<void> {
    if (!this.started) return
    this.started = false
    this.stopController.abort()
    clearTimeout(this.refreshTimer)
    clearTimeout(this.publishTimer)
    const { libp2p } = this.components
    libp2p.removeEventListener('peer:identify', this.onIdentify)
    libp2p.removeEventListener('peer:connect', this.onConnect)
    libp2p.services.pubsub.topicValidators.delete(CARDS_TOPIC)
    try { libp2p.services.pubsub.unsubscribe(CARDS_TOPIC) } catch {}
    await libp2p.unhandle(CARD_PROTOCOL).catch(() => {})
    await this.publishing?.catch(() => {})
  }

  /** Change what this persona says about itself; re-signs with a higher `seq` and republishes. */
  async update (profile: CardProfile): Promise<VerifiedCard> {
    this.profile = { ...this.profile, ...profile }
    await this.issue()
    if (this.started) this.schedulePublish()
    return this.ownCard
  }

  /** A verified, unexpired card of a peer (or our own). */
  get (peerId: string): VerifiedCard | undefined {
    if (peerId === this.ownCard?.card.peerId) return this.ownCard
    const card = this.cards.get(peerId)
    return card !== undefined && card.card.expiresAt >= Date.now() ? card : undefined
  }

  /** Every verified, unexpired card we hold of other peers. */
  list (): VerifiedCard[] {
    const now = Date.now()
    return [...this.cards.values()].filter(c => c.card.expiresAt >= now)
  }

  /**
   * Verify a sealed card and cache it if it is newer than what we hold. Throws the typed
   * verification error (`InvalidSignatureError`, `ExpiredError`, `MalformedMessageError`,
   * `TooLargeError`, `UnsupportedVersionError`) or `StaleRecordError` for a replay/rollback.
   */
  async accept (bytes: Uint8Array, source: VerifiedCard['source']): Promise<AcceptOutcome> {
    const { card } = await openCard(bytes)
    if (card.peerId === this.components.libp2p.peerId.toString()) {
      return { status: 'self', card: this.ownCard }
    }
    const held = this.cards.get(card.peerId)
    if (held !== undefined && card.seq <= held.card.seq) {
      if (card.seq === held.card.seq) return { status: 'duplicate', card: held }
      throw new StaleRecordError(`card of ${card.peerId} has seq ${card.seq}, older than the held ${held.card.seq}`)
    }
    const verified: VerifiedCard = { card, bytes, receivedAt: Date.now(), source }
    this.cards.set(card.peerId, verified)
    if (source !== 'store') {
      this.init.cache?.save(verified).catch((err: Error) => { log.error('could not persist card: %e', err) })
    }
    this.safeDispatch(verified)
    return { status: 'new', card: verified }
  }

  private safeDispatch (card: VerifiedCard): void {
    try {
      this.dispatchEvent(new CustomEvent('card', { detail: card }))
    } catch (err) {
      log.error('card listener threw: %e', err)
    }
  }

  /** Fetch a peer's current card over `/persona-mesh/card/1.0.0` and accept it. */
  async fetch (peer: PeerId, options: { signal?: AbortSignal } = {}): Promise<VerifiedCard> {
    const signal = combined([options.signal ?? AbortSignal.timeout(FETCH_TIMEOUT_MS), this.stopController.signal])
    const stream = await this.components.libp2p.dialProtocol(peer, CARD_PROTOCOL, { signal })
    const bytes = await readOneFrame(stream, MAX_CARD_SIZE, signal)
    const outcome = await this.accept(bytes, 'direct')
    if (outcome.card.card.peerId !== peer.toString()) {
      throw new StaleRecordError(`peer ${peer.toString()} served the card of ${outcome.card.card.peerId}`)
    }
    return outcome.card
  }

  /** Look a peer's card up in the DHT (for peers never met): the record held here first, then the network. */
  async lookup (peerId: string, options: { signal?: AbortSignal } = {}): Promise<VerifiedCard | undefined> {
    const signal = combined([options.signal ?? AbortSignal.timeout(DHT_TIMEOUT_MS), this.stopController.signal])
    const local = await this.heldRecord(peerId, { signal }).catch(() => undefined)
    if (local !== undefined) return local
    for await (const event of this.components.libp2p.services.dht.get(cardDhtKey(peerId), { signal })) {
      if (event.name === 'VALUE') {
        const found = await this.acceptRecord(peerId, event.value)
        if (found !== undefined) return found
      }
    }
    return this.get(peerId)
  }

  /**
   * The card record this node holds itself, as one of the DHT peers closest to the record's key;
   * no network. On a small private DHT every node holds every record, on a large one a few do.
   * kad-dht's own `get` would read it too, but only hands it out once the whole walk has answered.
   */
  async heldRecord (peerId: string, options: { signal?: AbortSignal } = {}): Promise<VerifiedCard | undefined> {
    const key = new Key(`${DHT_DATASTORE_PREFIX}/record/${base32.baseEncode(cardDhtKey(peerId))}`, false)
    let stored: Uint8Array
    try {
      stored = await this.components.datastore.get(key, options)
    } catch (err) {
      if ((err as Error).name === 'NotFoundError') return undefined
      throw err
    }
    return await this.acceptRecord(peerId, Libp2pRecord.deserialize(stored).value)
  }

  /** Accept a DHT card record for `peerId`; the card held for it (if any) when the record is older or bad. */
  private async acceptRecord (peerId: string, value: Uint8Array): Promise<VerifiedCard | undefined> {
    try {
      const outcome = await this.accept(value, 'dht')
      if (outcome.card.card.peerId === peerId) return outcome.card
    } catch (err) {
      if ((err as Error).name === 'StaleRecordError') return this.get(peerId)
      log('bad card for %s from the DHT: %s', peerId, (err as Error).message)
    }
    return undefined
  }

  /**
   * PeerIds that announced `capability` in the DHT (ours excluded). A walk of the whole DHT can take
   * long after the first answers came in, so once a provider is known the search ends at the first of:
   * - `limit` providers found;
   * - `HOLDER_QUORUM` holders of the list answered (this node's own provider store counts as one).
   *   Provider records live on the k peers closest to the key and each of those holds all of them,
   *   bar peers that were away when a provider announced: once a few holders answered, asking the
   *   rest rarely adds anyone;
   * - `PROVIDER_GRACE_MS` passed (a DHT whose holders are slow or gone).
   * `onProvider` hears of each provider as it is found, so the caller can start on it (fetch its
   * card) while the walk goes on.
   */
  async findProviders (capability: string, options: { signal?: AbortSignal, limit?: number, onProvider?: (peerId: string) => void } = {}): Promise<string[]> {
    const query = new AbortController()
    const signal = combined([options.signal ?? AbortSignal.timeout(DHT_TIMEOUT_MS), this.stopController.signal, query.signal])
    const limit = options.limit ?? 20
    const self = this.components.libp2p.peerId
    const found = new Set<string>()
    let holders = 0
    // resolved when the search has its answer: the walk is then left to unwind on its own
    const done = Promise.withResolvers<void>()
    let timer: ReturnType<typeof setTimeout> | undefined
    const walk = (async () => {
      // every provider comes in a PEER_RESPONSE (ours, from the local provider store, first); the
      // PROVIDER events that follow only repeat the new ones
      for await (const event of this.components.libp2p.services.dht.findProviders(await capabilityCid(capability), { signal })) {
        if (event.name !== 'PEER_RESPONSE' || event.providers.length === 0) continue
        for (const provider of event.providers) {
          const id = provider.id.toString()
          if (provider.id.equals(self) || found.has(id) || found.size >= limit) continue
          found.add(id)
          options.onProvider?.(id)
        }
        holders++
        if (found.size >= limit || (found.size > 0 && holders >= HOLDER_QUORUM)) {
          done.resolve()
          return
        }
        timer ??= found.size > 0 ? setTimeout(() => { done.resolve() }, PROVIDER_GRACE_MS) : undefined
      }
    })()
    try {
      // an aborted walk can take a while to unwind (queries in flight), and nobody needs to wait for that
      await Promise.race([walk, done.promise])
    } catch (err) {
      // ending the walk early is how the search ends; any other failure still counts
      if (found.size === 0) throw err
    } finally {
      clearTimeout(timer)
      query.abort()
      walk.catch(() => {})
    }
    return [...found]
  }

  private fetchQuietly (peer: PeerId): void {
    const key = peer.toString()
    if (this.fetching.has(key) || !this.started) return
    this.fetching.add(key)
    this.fetch(peer).catch((err: Error) => {
      log('no card from %s: %s', key, err.message)
    }).finally(() => { this.fetching.delete(key) })
  }

  private async issue (): Promise<void> {
    const { libp2p, privateKey } = this.components
    const now = Date.now()
    const previous = this.ownCard?.card.seq ?? 0
    const card: Card = {
      v: WIRE_VERSION,
      peerId: libp2p.peerId.toString(),
      name: this.init.name,
      description: this.profile.description ?? '',
      // time-based so it also grows across restarts without remembering the last one
      seq: Math.max(previous + 1, now),
      issuedAt: now,
      expiresAt: now + this.lifetime,
      addrs: libp2p.getMultiaddrs().map(ma => ma.toString()).slice(0, 32),
      capabilities: (this.profile.capabilities ?? []).map(c => CapabilitySchema.parse(typeof c === 'string' ? { name: c } : c)),
      tools: this.profile.tools ?? [],
      topics: this.profile.topics ?? [],
      protocols: this.init.protocols
    }
    const bytes = await sealCard(card, privateKey)
    this.ownCard = { card, bytes, receivedAt: now, source: 'self' }
    clearTimeout(this.refreshTimer)
    if (this.started || this.stopController.signal.aborted === false) {
      // re-issue at half-life so peers never hold only an expired card
      this.refreshTimer = setTimeout(() => {
        this.issue().then(() => { this.schedulePublish() }, (err: Error) => { log.error('could not re-issue card: %e', err) })
      }, Math.max(1000, this.lifetime / 2))
      this.refreshTimer.unref?.()
    }
  }

  private schedulePublish (): void {
    if (!this.started) return
    clearTimeout(this.publishTimer)
    this.publishTimer = setTimeout(() => {
      if (this.publishing !== undefined) {
        // one publication at a time; whatever changed meanwhile goes out right after it
        this.publishAgain = true
        return
      }
      this.publishing = this.publish().finally(() => {
        this.publishing = undefined
        if (this.publishAgain) {
          this.publishAgain = false
          this.schedulePublish()
        }
      })
    }, PUBLISH_DEBOUNCE_MS)
  }

  /** Gossip the card, put it in the DHT and provide each capability. Never throws. */
  private async publish (): Promise<void> {
    if (!this.started) return
    const { libp2p } = this.components
    const own = this.ownCard
    try {
      await libp2p.services.pubsub.publish(CARDS_TOPIC, own.bytes)
    } catch (err) {
      log('card gossip: %s', (err as Error).message)
    }
    if (libp2p.getConnections().length === 0) return
    const signal = combined([AbortSignal.timeout(DHT_TIMEOUT_MS), this.stopController.signal])
    try {
      await Promise.all([
        drain(libp2p.services.dht.put(cardDhtKey(own.card.peerId), own.bytes, { signal })),
        ...own.card.capabilities.map(async c => {
          await drain(libp2p.services.dht.provide(await capabilityCid(c.name), { signal }))
        })
      ])
      this.dhtPublishedSeq = own.card.seq
      log('published card seq %d in the DHT', own.card.seq)
    } catch (err) {
      log('card DHT publication failed (will retry on the next connection): %s', (err as Error).message)
    }
  }

  private serveCard (stream: Stream): void {
    const channel = new FrameChannel(stream, {
      maxFrameSize: MAX_CARD_SIZE,
      onFrame: () => {},
      onFramingError: (err) => { channel.abort(err) },
      onClose: () => {}
    })
    channel.send(this.ownCard.bytes).then(async () => { await channel.close() }, (err: Error) => { channel.abort(err) })
  }

  private async validateGossip (bytes: Uint8Array): Promise<TopicValidatorResult> {
    try {
      const outcome = await this.accept(bytes, 'gossip')
      return outcome.status === 'new' ? TopicValidatorResult.Accept : TopicValidatorResult.Ignore
    } catch (err) {
      if ((err as Error).name === 'StaleRecordError') return TopicValidatorResult.Ignore
      log('rejecting gossiped card: %s', (err as Error).message)
      return TopicValidatorResult.Reject
    }
  }

  private async validateDhtRecord (key: Uint8Array, value: Uint8Array): Promise<void> {
    const { card } = await openCard(value)
    const expected = new TextDecoder().decode(key)
    if (expected !== `/pmcard/${card.peerId}`) {
      throw new StaleRecordError(`card of ${card.peerId} stored under ${expected}`)
    }
  }

  private async selectDhtRecord (records: Uint8Array[]): Promise<number> {
    let best = 0
    let bestSeq = -1
    for (let i = 0; i < records.length; i++) {
      try {
        const { card } = await openCard(records[i]!)
        if (card.seq > bestSeq) { best = i; bestSeq = card.seq }
      } catch {}
    }
    return best
  }
}

/** Combine signals; many DHT sub-queries listen on one signal, so lift the listener cap. */
function combined (signals: AbortSignal[]): AbortSignal {
  const signal = AbortSignal.any(signals)
  setMaxListeners(Infinity, signal)
  return signal
}

/** The DHT provider key of a capability: CIDv1 (raw) of the sha-256 of its namespaced name. */
export async function capabilityCid (capability: string): Promise<CID> {
  return CID.createV1(raw.code, await sha256.digest(new TextEncoder().encode(capabilityProviderText(capability))))
}

async function drain (events: AsyncIterable<unknown>): Promise<void> {
  for await (const _ of events) {} // eslint-disable-line no-empty
}

/** Read exactly one length-prefixed frame, then let the stream go. */
async function readOneFrame (stream: Stream, maxSize: number, signal: AbortSignal): Promise<Uint8Array> {
  const { promise, resolve, reject } = Promise.withResolvers<Uint8Array>()
  const channel = new FrameChannel(stream, {
    maxFrameSize: maxSize,
    onFrame: (frame) => { resolve(frame.slice()) },
    onFramingError: (err) => { reject(err) },
    onClose: (err) => { reject(err ?? new Error('stream closed before a card arrived')) }
  })
  const onAbort = (): void => { reject(signal.reason ?? new Error('aborted')) }
  signal.addEventListener('abort', onAbort, { once: true })
  try {
    return await promise
  } finally {
    signal.removeEventListener('abort', onAbort)
    void channel.close()
  }
}

