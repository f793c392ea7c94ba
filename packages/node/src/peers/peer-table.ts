import { logger } from '@libp2p/logger'
import { peerIdFromString } from '@libp2p/peer-id'
import { TypedEventEmitter } from 'main-event'
import { RPC_PROTOCOL } from '@persona-mesh/protocol'
import type { CardService, VerifiedCard } from '../cards/index.js'
import type { Libp2p, PeerId } from '@libp2p/interface'

const log = logger('persona-mesh:peers')

/** Mark a peer offline when it stayed unreachable this long. @default 15000 */
export const DEFAULT_OFFLINE_AFTER_MS = 15_000
/** First redial of a disconnected peer; doubles up to `MAX_REDIAL_MS`. */
const FIRST_REDIAL_MS = 1_000
const MAX_REDIAL_MS = 60_000
const DIAL_TIMEOUT_MS = 5_000

/** What we know about one mesh peer. */
export interface PeerInfo {
  peerId: string
  /** From the peer's verified card, when we hold one. */
  name?: string
  card?: VerifiedCard['card']
  addrs: string[]
  connected: boolean
  online: boolean
  /** ms since epoch of the last sign of life (connection, card, ping) */
  lastSeen: number
  /** Round-trip time of the last ping, in ms */
  rtt?: number
}

export interface PeerTableEvents {
  'peer:online': CustomEvent<PeerInfo>
  'peer:offline': CustomEvent<PeerInfo>
}

interface Entry {
  peerId: string
  connected: boolean
  online: boolean
  lastSeen: number
  rtt?: number
  offlineTimer?: ReturnType<typeof setTimeout>
  redialTimer?: ReturnType<typeof setTimeout>
  redialDelay: number
}

export interface PeerTableInit {
  /** @default 15000 */
  offlineAfter?: number
}

/**
 * Every mesh peer (one that speaks our rpc protocol or has a verified card): connected or not,
 * online or offline, last seen, RTT. A disconnected peer with a known card is redialled with
 * backoff; it is marked offline once it stayed unreachable for `offlineAfter`.
 */
export class PeerTable extends TypedEventEmitter<PeerTableEvents> {
  private readonly entries = new Map<string, Entry>()
  private readonly offlineAfter: number
  private started = false
  private readonly listeners: Array<[string, (evt: any) => void]> = []

  constructor (private readonly libp2p: Libp2p, private readonly cards: CardService, init: PeerTableInit = {}) {
    super()
    this.offlineAfter = init.offlineAfter ?? DEFAULT_OFFLINE_AFTER_MS
  }

  start (): void {
    if (this.started) return
    this.started = true
    this.listen('peer:identify', (evt: CustomEvent<{ peerId: PeerId, protocols: string[] }>) => {
      if (evt.detail.protocols.includes(RPC_PROTOCOL)) this.sawConnected(evt.detail.peerId.toString())
    })
    this.listen('peer:connect', (evt: CustomEvent<PeerId>) => {
      const id = evt.detail.toString()
      if (this.entries.has(id) || this.cards.get(id) !== undefined) this.sawConnected(id)
    })
    this.listen('peer:disconnect', (evt: CustomEvent<PeerId>) => { this.sawDisconnected(evt.detail.toString()) })
    this.cards.addEventListener('card', (evt) => {
      const id = evt.detail.card.peerId
      const entry = this.entry(id)
      entry.lastSeen = Math.max(entry.lastSeen, evt.detail.receivedAt)
      if (this.libp2p.getConnections(peerIdFromString(id)).length === 0 && entry.redialTimer === undefined && !entry.connected) {
        this.scheduleRedial(entry)
      }
    })
  }

  stop (): void {
    if (!this.started) return
    this.started = false
    for (const [type, fn] of this.listeners) this.libp2p.removeEventListener(type as any, fn)
    this.listeners.length = 0
    for (const entry of this.entries.values()) {
      clearTimeout(entry.offlineTimer)
      clearTimeout(entry.redialTimer)
      entry.redialTimer = undefined
    }
  }

  private listen (type: string, fn: (evt: any) => void): void {
    this.libp2p.addEventListener(type as any, fn)
    this.listeners.push([type, fn])
  }

  private entry (peerId: string): Entry {
    let entry = this.entries.get(peerId)
    if (entry === undefined) {
      entry = { peerId, connected: false, online: false, lastSeen: 0, redialDelay: FIRST_REDIAL_MS }
      this.entries.set(peerId, entry)
    }
    return entry
  }

  private sawConnected (peerId: string): void {
    const entry = this.entry(peerId)
    entry.connected = true
    entry.lastSeen = Date.now()
    entry.redialDelay = FIRST_REDIAL_MS
    clearTimeout(entry.offlineTimer)
    clearTimeout(entry.redialTimer)
    entry.offlineTimer = undefined
    entry.redialTimer = undefined
    if (!entry.online) {
      entry.online = true
      this.emit('peer:online', entry)
    }
  }

  private sawDisconnected (peerId: string): void {
    const entry = this.entries.get(peerId)
    if (entry === undefined || !this.started) return
    if (this.libp2p.getConnections(peerIdFromString(peerId)).length > 0) return
    entry.connected = false
    entry.lastSeen = Date.now()
    clearTimeout(entry.offlineTimer)
    entry.offlineTimer = setTimeout(() => {
      entry.offlineTimer = undefined
      if (!entry.connected && entry.online) {
        entry.online = false
        this.emit('peer:offline', entry)
      }
    }, this.offlineAfter)
    this.scheduleRedial(entry)
  }

  private scheduleRedial (entry: Entry): void {
    if (!this.started || this.cards.get(entry.peerId) === undefined) return
    clearTimeout(entry.redialTimer)
    entry.redialTimer = setTimeout(() => {
      entry.redialTimer = undefined
      if (!this.started || entry.connected) return
      this.libp2p.dial(peerIdFromString(entry.peerId), { signal: AbortSignal.timeout(DIAL_TIMEOUT_MS) }).catch((err: Error) => {
        log('redial of %s failed: %s', entry.peerId, err.message)
        entry.redialDelay = Math.min(entry.redialDelay * 2, MAX_REDIAL_MS)
        this.scheduleRedial(entry)
      })
    }, entry.redialDelay)
  }

  private emit (type: keyof PeerTableEvents, entry: Entry): void {
    try {
      this.dispatchEvent(new CustomEvent(type, { detail: this.info(entry) }))
    } catch (err) {
      log.error('%s listener threw: %e', type, err)
    }
  }

  private info (entry: Entry): PeerInfo {
    const verified = this.cards.get(entry.peerId)
    const id = peerIdFromString(entry.peerId)
    const connections = this.libp2p.getConnections(id)
    const rtt = connections.find(c => c.rtt !== undefined)?.rtt ?? entry.rtt
    const addrs = connections.length > 0 ? connections.map(c => c.remoteAddr.toString()) : (verified?.card.addrs ?? [])
    const info: PeerInfo = {
      peerId: entry.peerId,
      addrs,
      connected: connections.length > 0,
      online: entry.online,
      lastSeen: entry.lastSeen
    }
    if (verified !== undefined) {
      info.name = verified.card.name
      info.card = verified.card
    }
    if (rtt !== undefined) info.rtt = rtt
    return info
  }

  has (peerId: string): boolean {
    return this.entries.has(peerId)
  }

  get (peerId: string): PeerInfo | undefined {
    const entry = this.entries.get(peerId)
    return entry === undefined ? undefined : this.info(entry)
  }

  /** All mesh peers, or only the online ones. Peers known only from a card are included (offline until they connect). */
  list (options: { onlineOnly?: boolean } = {}): PeerInfo[] {
    for (const verified of this.cards.list()) this.entry(verified.card.peerId)
    const all = [...this.entries.values()].map(e => this.info(e))
    return options.onlineOnly === true ? all.filter(p => p.online) : all
  }
}
