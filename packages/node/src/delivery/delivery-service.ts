import type { Connection, Libp2p, PeerId, PrivateKey, Stream } from '@libp2p/interface'
import { logger } from '@libp2p/logger'
import { peerIdFromString } from '@libp2p/peer-id'
import type { DeliverResult, EnvelopeInit, JsonValue, MessageEnvelope, NackReason } from '@persona-mesh/protocol'
import {
  createEnvelope,
  DELIVER_PROTOCOL,
  DELIVER_PROTOCOL_1_0,
  DELIVER_PROTOCOLS,
  decodeDeliverResult,
  encodeDeliverResult,
  isBatchSealed,
  MAX_FRAME_SIZE,
  openEnvelope,
  UnsupportedVersionError
} from '@persona-mesh/protocol'
import type { AcceptedItem, AuditEvent, MeshStore, OutboxEntry } from '@persona-mesh/store'
import { TypedEventEmitter } from 'main-event'
import * as varint from 'uint8-varint'
import { FrameChannel } from '../framing.js'
import type { RateLimit } from '../policy/token-bucket.js'
import { TokenBuckets } from '../policy/token-bucket.js'
import {
  DEFAULT_DELIVERY_RATE,
  DELIVERY_LINK_IDLE_MS,
  DELIVERY_PAGE,
  DELIVERY_PAGE_BYTES,
  DELIVERY_STREAM_TIMEOUT_MS,
  DELIVERY_WINDOW,
  DELIVERY_WINDOW_BYTES,
  FLUSH_LINGER_MS,
  MAX_DELIVER_STREAMS,
  RETRY_MAX_MS,
  RETRY_MIN_MS,
  SWEEP_INTERVAL_MS
} from './constants.js'
import type { DeliveryEvents, EnvelopeOptions, SendResult } from './index.js'
import { EnvelopeSealer } from './sealer.js'
import { createSigner } from './signer.js'
import { createVerifier, type Verifier } from './verifier.js'

const log = logger('persona-mesh:delivery')

/** What the receiver's policy says about an incoming envelope. */
export type AcceptDecision = 'inbox' | 'quarantine' | { refuse: NackReason, message: string }

export interface DeliveryComponents {
  libp2p: Libp2p
  privateKey: PrivateKey
  store: MeshStore
}

export interface DeliveryInit {
  /** @default 262144 */
  maxFrameSize?: number
  /** Per-peer token bucket on incoming deliveries. @default { rate: 10000, burst: 20000 } */
  rateLimit?: RateLimit
  /** Policy hook: where an incoming envelope goes. @default everything to the inbox */
  decide?: (envelope: MessageEnvelope, remote: string) => AcceptDecision | Promise<AcceptDecision>
  /** Audit hook. */
  audit?: (event: AuditRecord) => void
}

/** What the audit hook is handed: an audit event of a peer and a message, without its time (the node adds it). */
export type AuditRecord = Omit<AuditEvent, 'at'> & Required<Pick<AuditEvent, 'peer' | 'id'>>

/** Refusals the sender cannot fix by retrying: the message ends `failed`. */
const PERMANENT: ReadonlySet<NackReason> = new Set(['invalid_request', 'unauthorized', 'too_large', 'unsupported_version', 'incapable', 'loop_detected'])

interface Verified {
  envelope: MessageEnvelope
  bytes: Uint8Array
  decision: AcceptDecision
}

/** A frame after verification: ready to store, or already answered with a refusal. */
type Checked = Verified | DeliverResult

/** After a rate refusal, how long later frames on the same stream are refused too. */
const OVERLOAD_HOLD_MS = 1000

/**
 * Most envelopes stored in one synced batch: a sender's whole window, so a full window costs one
 * fsync and one ack write (batches of 128 cost ~40 µs more CPU per message across both sides).
 */
const MAX_ACCEPT_BATCH = DELIVERY_WINDOW
/** Most delivered entries settled in one write. */
const SETTLE_CHUNK = 128
/** Most envelope bytes a flush holds for entries queued behind it (else it reads them from the queue). */
const MAX_TAIL_BYTES = 4 * 1024 * 1024
/** Frames are written to the stream in chunks of about this much (one `send` each). */
const WRITE_CHUNK_BYTES = 128 * 1024
const RANK: Record<string, number> = { high: 0, normal: 1, low: 2 }
/** One read of the queue: a page that ends short of either bound reached the end. */
const PAGE = { limit: DELIVERY_PAGE, maxBytes: DELIVERY_PAGE_BYTES }

interface PeerState {
  flushing: boolean
  again: boolean
  retryAt: number
  delay: number
  /** Read the queue from its start again (more was queued out of order than a flush holds). */
  restart: boolean
  /** Queue position (priority rank, id) of the last entry the running flush read. */
  rank: number
  lastId: string
  /**
   * The last entry of the page the flush is working through (its position until it takes the
   * next): anything queued that sorts before it and is not in the page goes to `early`, or the
   * flush would step over it.
   */
  horizon: Position
  /** The receiver asked us to slow down during this flush. */
  paused: boolean
  /** Acked, settlement not yet durable: still in the outbox, must not be sent again. */
  settling: Set<string>
  /**
   * Entries queued since the running flush began its last read of the queue, in queue order (see
   * `onQueued`); `undefined` when nobody collects them.
   */
  tail?: OutboxEntry[]
  tailBytes: number
  /**
   * Entries queued during the flush that sort before the page it is sending (a higher priority,
   * or an id older than one already read: ids need not commit in order), in queue order. They go
   * out next, ahead of the rest of the page, without reading the queue again.
   */
  early: OutboxEntry[]
  earlyBytes: number
  /**
   * The flush is reading the queue. `tail` is complete while it does, however long it gets: what
   * the read returns is checked against it, and a read that reached the end is caught up only if
   * nothing queued meanwhile was left out of it.
   */
  reading: boolean
  /** That read reached the end of the queue: `tail` holds everything after it, no need to read again. */
  caughtUp: boolean
  /**
   * Where the last complete flush stopped: everything queued up to there was delivered (or is being
   * settled), so the next flush reads on from there rather than from the queue's start, where
   * LevelDB would step over the deleted records of every message delivered lately.
   */
  resume?: Pick<OutboxEntry, 'priority' | 'id'>
  /** A settlement failed since the flush began: its entries are still queued behind the position. */
  settleFailed: boolean
  /** Wakes a flush waiting for answers (or for the window) when something was queued. */
  wake?: () => void
}

/**
 * The sender's end of one delivery stream to a peer. It outlives a flush: the next flush within
 * {@link DELIVERY_LINK_IDLE_MS} reuses it instead of negotiating a new stream.
 */
interface Link {
  peer: string
  channel: FrameChannel
  /** The receiver takes batch-sealed envelopes (deliver/1.1.0); else each goes sealed alone. */
  batches: boolean
  /** Sent, not yet answered, in send order. */
  inFlight: Map<string, OutboxEntry>
  inFlightBytes: number
  /** Frames sent since this was last flushed to the stream, and their size. */
  pending: Uint8Array[]
  pendingBytes: number
  broken?: Error
  /** When the receiver last answered (or the window was last empty). */
  lastAnswer: number
  idleTimer?: ReturnType<typeof setTimeout>
  /** Wakes whoever waits for an answer. */
  notify?: () => void
}

/**
 * Durable delivery (DESIGN §7). `send()` resolves once the sealed envelope is synced into the
 * outbox; a per-recipient flush then streams queued envelopes over `/persona-mesh/deliver/1.1.0`
 * in order (priority, then FIFO) and deletes each only when the receiver acks it, which it does
 * only after the envelope and its dedupe keys are synced into its inbox. Every message ends
 * `delivered`, `expired` or `failed` with a reason.
 */
export class DeliveryService extends TypedEventEmitter<DeliveryEvents> {
  private readonly peers = new Map<string, PeerState>()
  private readonly buckets: TokenBuckets
  private readonly maxFrameSize: number
  private sweepTimer?: ReturnType<typeof setInterval>
  private lastExpirySweep = 0
  private started = false
  private stopController = new AbortController()
  private readonly inbound = new Set<FrameChannel>()
  private readonly links = new Map<string, Link>()
  private acked: Array<Pick<OutboxEntry, 'id' | 'to'>> = []
  private readonly self: string
  private readonly onIdentify = (evt: CustomEvent<{ peerId: PeerId, protocols: string[] }>): void => {
    if (evt.detail.protocols.some(p => DELIVER_PROTOCOLS.includes(p))) this.kick(evt.detail.peerId.toString(), true)
  }

  /** Seals bursts of sends under one signature (see {@link EnvelopeSealer}). */
  private readonly sealer: EnvelopeSealer
  /** Verifies the envelopes received (see {@link createVerifier}). */
  private verifier: Verifier

  constructor (private readonly components: DeliveryComponents, private readonly init: DeliveryInit = {}) {
    super()
    this.buckets = new TokenBuckets(init.rateLimit ?? DEFAULT_DELIVERY_RATE)
    this.maxFrameSize = init.maxFrameSize ?? MAX_FRAME_SIZE
    this.self = components.libp2p.peerId.toString()
    this.sealer = new EnvelopeSealer(createSigner(components.privateKey), this.maxFrameSize)
    this.verifier = createVerifier()
  }

  async start (): Promise<void> {
    if (this.started) return
    this.started = true
    this.stopController = new AbortController()
    await this.components.libp2p.handle(DELIVER_PROTOCOLS, (stream, connection) => { this.receive(stream, connection) }, {
      maxInboundStreams: MAX_DELIVER_STREAMS,
      maxOutboundStreams: MAX_DELIVER_STREAMS
    })
    this.components.libp2p.addEventListener('peer:identify', this.onIdentify)
    this.sweepTimer = setInterval(() => { this.sweep() }, SWEEP_INTERVAL_MS)
    this.sweep()
  }

  async stop (): Promise<void> {
    if (!this.started) return
    this.started = false
    this.stopController.abort()
    clearInterval(this.sweepTimer)
    this.components.libp2p.removeEventListener('peer:identify', this.onIdentify)
    await this.components.libp2p.unhandle(DELIVER_PROTOCOLS).catch(() => {})
    for (const state of this.peers.values()) state.wake?.()
    await Promise.all([...this.links.values()].map(async link => { await this.closeLink(link) }))
    await Promise.all([...this.inbound].map(async c => { await c.close() }))
    this.inbound.clear()
    // a fresh one for a restart: it starts no worker until a burst needs one
    const { verifier } = this
    this.verifier = createVerifier()
    await verifier.close()
  }

  /** Seal an envelope for `to` (a PeerId), queue it durably, and start delivering it. */
  async send (to: string, body: JsonValue, options: EnvelopeOptions = {}): Promise<SendResult> {
    const { store } = this.components
    const { signal } = options
    const seq = await store.outbox.allocateSeq(1, signal !== undefined ? { signal } : {})
    // built field by field, not by spreading optional parts: this runs for every message
    const init: EnvelopeInit = { from: this.self, to, body, seq, kind: options.kind ?? 'message' }
    if (options.thread !== undefined) init.thread = options.thread
    if (options.replyTo !== undefined) init.replyTo = options.replyTo
    if (options.priority !== undefined) init.priority = options.priority
    if (options.ttl !== undefined) init.ttl = options.ttl
    if (options.trace !== undefined) init.trace = options.trace
    if (options.hop !== undefined) init.hop = options.hop
    const envelope = createEnvelope(init)
    const bytes = await this.sealer.seal(envelope)
    // the queued entry, as the store takes it and as a flush holds it
    const entry: OutboxEntry = { id: envelope.id, to, priority: envelope.priority, seq, createdAt: envelope.createdAt, expiresAt: envelope.expiresAt, bytes, attempts: 0, nextAttemptAt: 0 }
    await store.outbox.add([entry], signal !== undefined ? { signal } : {})
    this.audit('send', to, envelope, 'queued')
    if (to === this.self) {
      // a note to self: straight into our own inbox, same path as a delivery
      void this.deliverLocally(envelope, bytes)
    } else {
      this.onQueued(entry)
    }
    return { id: envelope.id, to, status: 'queued' }
  }

  /**
   * `entry` is durably queued. A running flush takes it from memory rather than reading the queue
   * again (at a steady rate of sends that read would cost more than the rest of the sender's
   * storage work): after the page it is sending (`tail`), or, sorting before the end of that page,
   * ahead of the rest of it (`early`). Only when that is more than a flush holds does it read the
   * queue: on from its position, or from the start for what sorts before it.
   */
  private onQueued (entry: OutboxEntry): void {
    const state = this.peers.get(entry.to)
    if (state?.resume !== undefined && before(entry, positionOf(state.resume))) state.resume = undefined
    const tail = state?.tail
    if (state?.flushing === true && tail !== undefined) {
      const bytes = entry.bytes.byteLength
      if (before(entry, state.horizon)) {
        if (tailFull(state.early, state.earlyBytes + bytes)) state.restart = true
        else {
          insertInOrder(state.early, entry)
          state.earlyBytes += bytes
        }
      } else if (!state.reading && tailFull(tail, state.tailBytes + bytes)) {
        // a flush held up (a full window): let it read the queue, not hold envelopes in memory
        dropTail(state)
      } else {
        insertInOrder(tail, entry)
        state.tailBytes += bytes
      }
    }
    this.kick(entry.to, false, entry)
  }

  /** Try delivering to `peer` now (connected, discovered, or because `queued` was just queued for it). */
  kick (peer: string, reset: boolean, queued?: Pick<OutboxEntry, 'priority' | 'id'>): void {
    if (!this.started || peer === this.self) return
    const state = this.state(peer)
    if (reset) {
      state.retryAt = 0
      state.delay = RETRY_MIN_MS
    }
    if (state.flushing) {
      state.again = true
      // a new send is in the flush's hands (`onQueued`); anything else may have changed the queue
      if (queued === undefined) state.restart = true
      state.wake?.()
      return
    }
    if (Date.now() < state.retryAt) return
    if (this.components.store.outbox.count().perPeer[peer] === undefined) return
    void this.flush(peer, state)
  }

  private state (peer: string): PeerState {
    let state = this.peers.get(peer)
    if (state === undefined) {
      state = { flushing: false, again: false, retryAt: 0, delay: RETRY_MIN_MS, restart: false, rank: 0, lastId: '', horizon: { rank: 0, lastId: '' }, paused: false, settling: new Set(), tailBytes: 0, early: [], earlyBytes: 0, reading: false, caughtUp: false, settleFailed: false }
      this.peers.set(peer, state)
    }
    return state
  }

  private backoff (state: PeerState, reason: string, peer: string): void {
    state.retryAt = Date.now() + state.delay
    log('delivery to %s paused for %d ms: %s', peer, state.delay, reason)
    state.delay = Math.min(state.delay * 2, RETRY_MAX_MS)
  }

  private async flush (peer: string, state: PeerState): Promise<void> {
    state.flushing = true
    state.again = false
    state.paused = false
    let link: Link | undefined
    try {
      link = this.links.get(peer)
      const complete = await this.deliverAll(peer, state)
      if (complete) {
        state.delay = RETRY_MIN_MS
        state.retryAt = 0
      }
    } catch (err) {
      this.backoff(state, (err as Error).message, peer)
      link = this.links.get(peer)
      if (link !== undefined) void this.closeLink(link)
    } finally {
      state.flushing = false
      state.tail = undefined
      state.tailBytes = 0
      state.early = []
      state.earlyBytes = 0
      state.reading = false
      state.caughtUp = false
      state.wake = undefined
      link = this.links.get(peer)
      if (link !== undefined && link.inFlight.size === 0) this.idleLink(link)
      if (state.again && this.started) this.kick(peer, false)
    }
  }

  /**
   * Stream everything queued for `peer` over one (reused) stream: read the queue in pages, each
   * after the last entry sent, keep up to a window of frames unanswered, write frames in chunks.
   * Acks settle in batches (one synced write per turn of the event loop). `true` if the queue was
   * drained without refusals or entries held back for a later attempt.
   */
  private async deliverAll (peer: string, state: PeerState): Promise<boolean> {
    const { store } = this.components
    let after = state.resume
    // the first read goes on from where the last complete flush stopped
    let resumed = after !== undefined
    state.resume = undefined
    state.settleFailed = false
    if (after !== undefined) {
      state.rank = RANK[after.priority] ?? 1
      state.lastId = after.id
    }
    state.horizon = { rank: state.rank, lastId: state.lastId }
    let link: Link | undefined
    for (;;) {
      if (!this.started) return false
      if (state.restart) {
        state.restart = false
        after = undefined
        state.rank = 0
        state.lastId = ''
        state.horizon = { rank: 0, lastId: '' }
        state.caughtUp = false
        // the read from the start finds them
        state.early = []
        state.earlyBytes = 0
      }
      state.again = false
      let page: OutboxEntry[]
      if (state.caughtUp) {
        // everything queued since the last read, in order; what that read returned already is behind the position
        page = state.tail!.filter(entry => !before(entry, state) && entry.id !== state.lastId)
        state.tail = []
        state.tailBytes = 0
        if (page.length > 0) state.horizon = positionOf(page[page.length - 1]!)
      } else {
        // collect what gets queued from here on; a read that ends short of a page reached the end
        state.tail = []
        state.tailBytes = 0
        state.caughtUp = false
        state.reading = true
        try {
          page = await store.outbox.pending(peer, after === undefined ? PAGE : { ...PAGE, after })
        } finally {
          state.reading = false
        }
        if (state.restart) continue
        if (resumed) {
          resumed = false
          if (page.length === 0 && (store.outbox.count().perPeer[peer] ?? 0) > state.settling.size) {
            // queued, not being settled, yet nothing after the stop: expired entries the sweep has
            // not settled yet, or something stepped over. Never leave it waiting: read the whole queue
            log('delivery to %s: queued entries before where the last flush stopped; reading the queue from its start', peer)
            state.restart = true
            continue
          }
        }
        if (page.length > 0) state.horizon = positionOf(page[page.length - 1]!)
        // collected while the read ran, sorting before the end of its page, but not in it: it
        // committed too late for the read (ids and priorities need not commit in order)
        if (state.tail.length > 0 && before(state.tail[0]!, state.horizon)) {
          this.takeEarly(state, page)
          if (state.restart) continue
        }
        state.caughtUp = page.length < DELIVERY_PAGE && bytesOf(page) < DELIVERY_PAGE_BYTES
        // more came meanwhile than a flush holds: the next read (on from this page) finds it
        if (tailFull(state.tail, state.tailBytes)) dropTail(state)
      }
      if (page.length === 0 && state.early.length === 0) {
        // everything queued is on its way: wait for the answers, or for something new to send
        while (link !== undefined && link.inFlight.size > 0 && !state.again && !state.restart && !state.paused && link.broken === undefined) {
          await this.waitLink(link, state)
        }
        if (link?.broken !== undefined) throw link.broken
        if (state.paused && link !== undefined) return await this.pause(link, state, peer)
        if (state.again || state.restart) continue
        // all answered and nothing new: stay a moment for what gets queued next (collected in `tail`)
        // rather than end, when the next flush would start with a read of the queue
        if (link !== undefined && state.caughtUp && await this.linger(link, state)) continue
        if (!state.settleFailed) state.resume = after
        return true
      }
      link ??= await this.openLink(peer)
      const now = Date.now()
      for (let next = 0; ;) {
        // the page in order, with what was queued meanwhile sorting before its next entry ahead of it
        let entry = page[next]
        const early = state.early[0]
        if (early !== undefined && (entry === undefined || before(early, positionOf(entry)))) {
          entry = state.early.shift()!
          state.earlyBytes -= entry.bytes.byteLength
        } else if (entry !== undefined) {
          next++
          after = entry
          state.rank = RANK[entry.priority] ?? 1
          state.lastId = entry.id
        } else {
          break
        }
        // not due yet (the receiver refused it for now): nothing queued behind it goes first (FIFO);
        // let what is on its way be answered and come back when it is due
        if (entry.nextAttemptAt > now) {
          await this.sendPending(link)
          while (link.inFlight.size > 0 && link.broken === undefined) await this.waitLink(link, state)
          if (link.broken !== undefined) throw link.broken
          state.retryAt = Math.max(state.retryAt, entry.nextAttemptAt)
          return false
        }
        // the expiry sweep settles it
        if (entry.expiresAt < now) continue
        if (link.inFlight.has(entry.id) || state.settling.has(entry.id)) continue
        // a receiver before batch sealing gets the same envelope sealed alone
        const bytes = link.batches || !isBatchSealed(entry.bytes) ? entry.bytes : await this.sealer.sealAlone(entry.bytes)
        while ((link.inFlight.size >= DELIVERY_WINDOW || link.inFlightBytes >= DELIVERY_WINDOW_BYTES) && link.broken === undefined && !state.paused) {
          await this.sendPending(link)
          await this.waitLink(link, state)
        }
        if (link.broken !== undefined) throw link.broken
        if (state.paused) break
        if (link.inFlight.size === 0) link.lastAnswer = Date.now()
        link.inFlight.set(entry.id, entry)
        link.inFlightBytes += entry.bytes.byteLength
        link.pending.push(bytes)
        link.pendingBytes += bytes.byteLength
        if (link.pendingBytes >= WRITE_CHUNK_BYTES) await this.sendPending(link)
        if (state.restart) break
      }
      await this.sendPending(link)
      if (link.broken !== undefined) throw link.broken
      if (state.paused) return await this.pause(link, state, peer)
    }
  }

  /**
   * Entries collected while a read ran that sort before the end of the page it returned: those
   * the read missed join `early`, and the tail keeps only what comes after the page.
   */
  private takeEarly (state: PeerState, page: OutboxEntry[]): void {
    const read = new Set(page.map(entry => entry.id))
    const tail: OutboxEntry[] = []
    let tailBytes = 0
    for (const entry of state.tail!) {
      const bytes = entry.bytes.byteLength
      if (!before(entry, state.horizon)) {
        tail.push(entry)
        tailBytes += bytes
      } else if (!read.has(entry.id)) {
        if (tailFull(state.early, state.earlyBytes + bytes)) {
          state.restart = true
          return
        }
        insertInOrder(state.early, entry)
        state.earlyBytes += bytes
      }
    }
    state.tail = tail
    state.tailBytes = tailBytes
  }

  /** The receiver asked us to slow down: let what is on its way be answered, then back off. */
  private async pause (link: Link, state: PeerState, peer: string): Promise<false> {
    while (link.inFlight.size > 0 && link.broken === undefined) await this.waitLink(link, state)
    if (link.broken !== undefined) throw link.broken
    this.backoff(state, 'the receiver asked us to slow down', peer)
    return false
  }

  /** Wait for an answer on `link` (or for news from `kick`); throws if the receiver stays silent too long. */
  private async waitLink (link: Link, state: PeerState): Promise<void> {
    if (link.broken !== undefined) return
    const silent = Date.now() - link.lastAnswer
    if (link.inFlight.size > 0 && silent >= DELIVERY_STREAM_TIMEOUT_MS) {
      link.broken = new Error(`no answer within ${DELIVERY_STREAM_TIMEOUT_MS} ms`)
      return
    }
    let timer: ReturnType<typeof setTimeout> | undefined
    await new Promise<void>((resolve) => {
      link.notify = resolve
      state.wake = resolve
      timer = setTimeout(resolve, Math.max(1, DELIVERY_STREAM_TIMEOUT_MS - silent))
    })
    clearTimeout(timer)
    link.notify = undefined
    state.wake = undefined
  }

  /** Wait up to {@link FLUSH_LINGER_MS} for something new to send on `link`; `true` if it came. */
  private async linger (link: Link, state: PeerState): Promise<boolean> {
    if (link.broken !== undefined) return false
    let timer: ReturnType<typeof setTimeout> | undefined
    await new Promise<void>((resolve) => {
      link.notify = resolve
      state.wake = resolve
      timer = setTimeout(resolve, FLUSH_LINGER_MS)
    })
    clearTimeout(timer)
    link.notify = undefined
    state.wake = undefined
    return this.started && link.broken === undefined && (state.again || state.restart)
  }

  /** The peer's delivery stream: the idle one if there is one, else a new one. */
  private async openLink (peer: string): Promise<Link> {
    const existing = this.links.get(peer)
    if (existing !== undefined) {
      clearTimeout(existing.idleTimer)
      existing.idleTimer = undefined
      if (existing.broken === undefined && existing.channel.open) return existing
      this.links.delete(peer)
      void existing.channel.close()
    }
    const { libp2p } = this.components
    const target = peerIdFromString(peer)
    if (libp2p.getConnections(target).length === 0 && libp2p.getConnections().length === 0) {
      // nobody to ask and no address to try: a dial would only wait out its timeout, and a dial the
      // user makes meanwhile would queue behind it. Connect/discovery/card events retry.
      const known = await libp2p.peerStore.get(target).then(p => p.addresses.length, () => 0)
      if (known === 0) throw new Error('no known address and no peers to ask for one')
    }
    const stream = await libp2p.dialProtocol(target, DELIVER_PROTOCOLS, {
      signal: AbortSignal.any([AbortSignal.timeout(10_000), this.stopController.signal])
    })
    const link: Link = { peer, channel: undefined as unknown as FrameChannel, batches: stream.protocol === DELIVER_PROTOCOL, inFlight: new Map(), inFlightBytes: 0, pending: [], pendingBytes: 0, lastAnswer: Date.now() }
    const fail = (err: Error): void => {
      link.broken ??= err
      if (this.links.get(peer) === link) this.links.delete(peer)
      clearTimeout(link.idleTimer)
      link.notify?.()
    }
    link.channel = new FrameChannel(stream, {
      maxFrameSize: this.maxFrameSize,
      onFrame: (bytes) => { this.onAnswer(link, bytes, fail) },
      onFramingError: fail,
      onClose: (err) => { fail(err ?? new Error('delivery stream closed')) }
    })
    // the receiver closes after refusing a frame it could not read: stop waiting on this stream
    stream.addEventListener('remoteCloseWrite', () => { fail(new Error('the receiver closed the delivery stream')) })
    this.links.set(peer, link)
    return link
  }

  private onAnswer (link: Link, bytes: Uint8Array, fail: (err: Error) => void): void {
    let result: DeliverResult
    try {
      result = decodeResult(bytes)
    } catch (err) {
      fail(err as Error)
      return
    }
    // answers come in frame order, so a refusal the receiver could not tie to an id is for the
    // oldest unanswered frame (e.g. one larger than the receiver's limit)
    const id = result.id ?? link.inFlight.keys().next().value
    if (result.id === null) {
      if (result.t === 'nack' && result.reason === 'too_large' && id !== undefined) {
        const entry = link.inFlight.get(id)!
        link.inFlight.delete(id)
        link.inFlightBytes -= entry.bytes.byteLength
        void this.settle(entry, { status: 'failed', reason: `too_large: ${result.message ?? 'larger than the receiver accepts'}` })
      }
      fail(new Error(`the receiver refused a frame: ${result.t === 'nack' ? result.reason : 'unknown'}`))
      return
    }
    if (id === undefined) return
    const entry = link.inFlight.get(id)
    if (entry === undefined) return
    link.inFlight.delete(id)
    link.inFlightBytes -= entry.bytes.byteLength
    link.lastAnswer = Date.now()
    link.notify?.()
    const state = this.state(link.peer)
    if (result.t === 'ack') {
      state.settling.add(id)
      this.settleDelivered(entry)
    } else if (result.reason === 'expired') {
      void this.settle(entry, { status: 'expired', reason: result.message ?? 'the receiver found it expired' })
    } else if (PERMANENT.has(result.reason)) {
      void this.settle(entry, { status: 'failed', reason: `${result.reason}${result.message !== undefined ? `: ${result.message}` : ''}` })
    } else {
      // overloaded / timeout / internal_error: try it again later, back off the peer
      state.paused = true
      const attempts = entry.attempts + 1
      void this.components.store.outbox.reschedule(entry.id, {
        attempts,
        nextAttemptAt: Date.now() + Math.min(RETRY_MIN_MS * 2 ** Math.min(attempts, 6), RETRY_MAX_MS),
        lastError: `${result.reason}${result.message !== undefined ? `: ${result.message}` : ''}`
      }).catch(() => {})
    }
  }

  /** Write the frames gathered on `link` as one chunk, honouring backpressure. */
  private async sendPending (link: Link): Promise<void> {
    if (link.pending.length === 0 || link.broken !== undefined) return
    const frames = link.pending
    link.pending = []
    link.pendingBytes = 0
    try {
      const stream = link.channel.stream
      if (!stream.send(frameAll(frames))) await stream.onDrain()
    } catch (err) {
      link.broken ??= err as Error
    }
  }

  /** Keep an idle link open for a while, for the next flush. */
  private idleLink (link: Link): void {
    if (link.broken !== undefined || !this.started) {
      void this.closeLink(link)
      return
    }
    clearTimeout(link.idleTimer)
    link.idleTimer = setTimeout(() => {
      if (link.inFlight.size === 0 && !(this.peers.get(link.peer)?.flushing ?? false)) void this.closeLink(link)
    }, DELIVERY_LINK_IDLE_MS)
    link.idleTimer.unref?.()
  }

  private async closeLink (link: Link): Promise<void> {
    clearTimeout(link.idleTimer)
    if (this.links.get(link.peer) === link) this.links.delete(link.peer)
    link.broken ??= new Error('delivery stream closed')
    link.notify?.()
    await link.channel.close()
  }

  /** Acks come in bursts: settle them in one synced write per turn of the event loop. */
  private settleDelivered (entry: Pick<OutboxEntry, 'id' | 'to'>): void {
    this.acked.push(entry)
    if (this.acked.length === 1) setImmediate(() => { void this.settleAcked() })
  }

  private async settle (entry: Pick<OutboxEntry, 'id' | 'to'>, outcome: { status: 'delivered' } | { status: 'expired' | 'failed', reason: string }): Promise<void> {
    if (outcome.status === 'delivered') {
      this.settleDelivered(entry)
      return
    }
    try {
      const [result] = await this.components.store.outbox.settle([entry.id], outcome)
      if (result?.changed !== true) return
      this.audit(outcome.status, entry.to, { id: entry.id }, outcome.status, outcome.reason)
      this.emit(`message:${outcome.status}`, { id: entry.id, to: entry.to, reason: outcome.reason })
    } catch (err) {
      log.error('could not settle %s: %e', entry.id, err)
      this.settlementFailed(entry.to)
    }
  }

  /** A settlement for `peer` failed: its entry is still queued, behind where a flush would resume. */
  private settlementFailed (peer: string): void {
    const state = this.peers.get(peer)
    if (state === undefined) return
    state.resume = undefined
    state.settleFailed = true
  }

  private async settleAcked (): Promise<void> {
    // bounded settlements: a big burst of acks becomes a few writes, and delivered events (and
    // whatever their listeners send next) come in waves the receiver can work on meanwhile
    const entries = this.acked.length <= SETTLE_CHUNK ? this.acked : this.acked.slice(0, SETTLE_CHUNK)
    this.acked = this.acked.length <= SETTLE_CHUNK ? [] : this.acked.slice(SETTLE_CHUNK)
    if (this.acked.length > 0) setImmediate(() => { void this.settleAcked() })
    try {
      const results = await this.components.store.outbox.settle(entries.map(e => e.id), { status: 'delivered' })
      results.forEach((result, i) => {
        const entry = entries[i]
        if (result.changed !== true || entry === undefined) return
        this.audit('delivered', entry.to, { id: entry.id }, 'delivered')
        this.emit('message:delivered', { id: entry.id, to: entry.to })
      })
    } catch (err) {
      log.error('could not settle %d delivered messages: %e', entries.length, err)
      // the next flush must read them again, from the start of the queue
      for (const entry of entries) this.settlementFailed(entry.to)
    } finally {
      // settled (or not: then the next flush sends them again, and the receiver acks a duplicate)
      for (const entry of entries) this.peers.get(entry.to)?.settling.delete(entry.id)
    }
  }

  private emit<K extends keyof DeliveryEvents> (type: K, detail: DeliveryEvents[K]['detail']): void {
    try {
      this.dispatchEvent(new CustomEvent(type, { detail }))
    } catch (err) {
      log.error('%s listener threw: %e', type, err)
    }
  }

  private audit (kind: string, peer: string, envelope: Pick<MessageEnvelope, 'id'> & Partial<Pick<MessageEnvelope, 'trace'>>, outcome: string, detail?: string): void {
    if (this.init.audit === undefined) return
    const event: AuditRecord = { kind, peer, id: envelope.id, outcome }
    if (envelope.trace !== undefined) event.trace = envelope.trace
    if (detail !== undefined) event.detail = detail
    this.init.audit(event)
  }

  /** Retries that came due, and expiries. */
  private sweep (): void {
    if (!this.started) return
    const now = Date.now()
    for (const { to } of this.components.store.outbox.recipients()) {
      const state = this.state(to)
      if (!state.flushing && now >= state.retryAt) this.kick(to, false)
    }
    if (now - this.lastExpirySweep >= 30 * SWEEP_INTERVAL_MS) {
      this.lastExpirySweep = now
      void this.expire(now)
    }
  }

  private async expire (now: number): Promise<void> {
    try {
      const ids = await this.components.store.outbox.expired(now, { limit: 1000 })
      for (const id of ids) {
        const record = await this.components.store.outbox.get(id)
        if (record !== undefined) await this.settle(record, { status: 'expired', reason: `not delivered before ${new Date(record.expiresAt).toISOString()}` })
      }
    } catch (err) {
      log.error('expiry sweep failed: %e', err)
    }
  }

  /** Expire what is due now (tests, and before listing the outbox). */
  async expireNow (): Promise<void> {
    await this.expire(Date.now())
  }

  // ---- receiving -----------------------------------------------------------------------------

  private receive (stream: Stream, connection: Connection): void {
    const remote = connection.remotePeer.toString()
    const batches = stream.protocol === DELIVER_PROTOCOL
    // frames are verified as they arrive (in parallel) and stored in arrival order, in batches:
    // everything that arrived while the previous batch was being synced goes in the next one
    const queue: Array<Promise<Checked>> = []
    let draining = false
    // a sender that finished writing gets the stream closed once every frame is answered, so
    // half-open streams do not pile up against the per-connection stream limit
    let senderDone = false
    let framingBroken = false
    // once one frame is refused for rate, later ones on this stream are too for a while, so an
    // earlier message never loses its place to a later one (FIFO per sender)
    let overloadedUntil = 0
    const closeIfDone = (): void => {
      if ((senderDone || framingBroken) && !draining && queue.length === 0) void channel.close()
    }
    stream.addEventListener('remoteCloseWrite', () => { senderDone = true; closeIfDone() })
    const drain = async (): Promise<void> => {
      draining = true
      try {
        while (queue.length > 0) {
          const batch = await Promise.all(queue.splice(0, MAX_ACCEPT_BATCH))
          const results = await this.storeBatch(batch, remote)
          if (!channel.open) continue
          // every answer of the batch in one write
          if (!stream.send(frameAll(results.map(encodeResult)))) await stream.onDrain()
        }
      } catch (err) {
        log('delivery stream from %s failed: %s', remote, (err as Error).message)
      } finally {
        draining = false
        closeIfDone()
      }
    }
    const channel: FrameChannel = new FrameChannel(stream, {
      maxFrameSize: this.maxFrameSize,
      onFrame: (bytes) => {
        const now = Date.now()
        const admitted = now >= overloadedUntil && this.buckets.take(remote)
        if (!admitted) overloadedUntil = now + OVERLOAD_HOLD_MS
        queue.push(this.check(bytes, remote, admitted, batches))
        if (!draining) void drain()
      },
      onFramingError: (err) => {
        log('peer %s broke delivery framing: %s', remote, err.message)
        // answered after every frame before it (the sender maps it to its oldest unanswered one), then closed
        framingBroken = true
        queue.push(Promise.resolve({ v: 1, t: 'nack', id: null, reason: 'too_large', message: `frame larger than ${this.maxFrameSize} bytes or badly framed` }))
        if (!draining) void drain()
      },
      onClose: () => { this.inbound.delete(channel) }
    })
    this.inbound.add(channel)
  }

  /**
   * Verify one frame: signature, signer == from, version, schema, addressed to us, not expired,
   * within rate; batch-sealed only where the stream's version of the protocol has them.
   */
  private async check (bytes: Uint8Array, remote: string, admitted: boolean, batches: boolean): Promise<Checked> {
    let envelope: MessageEnvelope
    try {
      if (!batches && isBatchSealed(bytes)) throw new UnsupportedVersionError('batch-sealed', `envelope on ${DELIVER_PROTOCOL_1_0}`)
      envelope = (await openEnvelope(bytes, { maxSize: this.maxFrameSize, allowExpired: true, checkSignature: this.verifier.check })).envelope
    } catch (err) {
      const reason = nackReasonFor(err as Error)
      log('refused a delivery from %s: %s', remote, (err as Error).message)
      this.init.audit?.({ kind: 'receive', peer: remote, id: '', outcome: `refused: ${reason}`, detail: (err as Error).message })
      return { v: 1, t: 'nack', id: null, reason, message: (err as Error).message.slice(0, 1000) }
    }
    const refuse = (reason: NackReason, message: string): DeliverResult => {
      this.audit('receive', remote, envelope, `refused: ${reason}`, message)
      return { v: 1, t: 'nack', id: envelope.id, reason, message }
    }
    // no relaying in this version: a peer delivers only what it signed itself
    if (envelope.from !== remote) return refuse('unauthorized', 'the envelope was not signed by the peer delivering it')
    if (envelope.expiresAt < Date.now()) return refuse('expired', `expired at ${new Date(envelope.expiresAt).toISOString()}`)
    if (envelope.to !== this.self) return refuse('invalid_request', 'not addressed to this peer')
    if (envelope.kind === 'broadcast') return refuse('invalid_request', 'broadcasts travel by gossip, not delivery')
    if (!admitted) return refuse('overloaded', 'delivery rate limit: slow down')
    let decision: AcceptDecision = 'inbox'
    if (this.init.decide !== undefined) {
      try {
        decision = await this.init.decide(envelope, remote)
      } catch (err) {
        log.error('policy check failed: %e', err)
        return refuse('internal_error', 'policy check failed')
      }
    }
    if (typeof decision === 'object') return refuse(decision.refuse, decision.message)
    return { envelope, bytes, decision }
  }

  /** Store the verified envelopes of a batch in one synced write; answer every frame of it, in order. */
  private async storeBatch (batch: Checked[], remote: string): Promise<DeliverResult[]> {
    const accepted = batch.filter((c): c is Verified => !('t' in c))
    let outcomes: AcceptedItem[] = []
    let failure: Error | undefined
    if (accepted.length > 0) {
      try {
        const now = Date.now()
        // synced before it resolves: only then do we ack
        outcomes = await this.components.store.inbox.acceptEntries(accepted.map(c => ({ envelope: c.envelope, bytes: c.bytes, receivedAt: now, quarantined: c.decision === 'quarantine' })))
      } catch (err) {
        failure = err as Error
        log.error('could not store a batch from %s: %e', remote, err)
      }
    }
    let i = 0
    const results = batch.map((checked): DeliverResult => {
      if ('t' in checked) return checked
      const outcome = outcomes[i++]
      const { envelope, decision } = checked
      if (failure !== undefined || outcome === undefined) {
        return { v: 1, t: 'nack', id: envelope.id, reason: 'internal_error', message: 'the receiver could not store it; retry later' }
      }
      if (outcome.status === 'stored') this.audit('receive', remote, envelope, decision === 'quarantine' ? 'quarantined' : 'stored')
      return { v: 1, t: 'ack', id: envelope.id, status: outcome.status }
    })
    // announced after the acks are on their way
    if (failure === undefined && outcomes.length > 0) {
      setImmediate(() => {
        for (const outcome of outcomes) if (outcome.entry !== undefined) this.emit('message:received', outcome.entry)
      })
    }
    return results
  }

  private async deliverLocally (envelope: MessageEnvelope, bytes: Uint8Array): Promise<void> {
    const [result] = await this.storeBatch([{ envelope, bytes, decision: 'inbox' }], this.self).catch(() => [])
    if (result === undefined) return
    const entry = { id: envelope.id, to: envelope.to, priority: envelope.priority }
    if (result.t === 'ack') {
      await this.settle(entry, { status: 'delivered' })
    } else {
      await this.settle(entry, { status: 'failed', reason: result.message ?? result.reason })
    }
  }
}

function bytesOf (entries: OutboxEntry[]): number {
  let bytes = 0
  for (const entry of entries) bytes += entry.bytes.byteLength
  return bytes
}

/** More than a flush holds in memory for the entries queued behind it. */
function tailFull (tail: OutboxEntry[], bytes: number): boolean {
  return tail.length >= DELIVERY_PAGE || bytes > MAX_TAIL_BYTES
}

/** Let go of the collected entries: they are durably queued, and the flush reads them from the queue. */
function dropTail (state: PeerState): void {
  state.tail = []
  state.tailBytes = 0
  state.caughtUp = false
}

/** Put `entry` into `entries` (in queue order) where it belongs: mostly at the end. */
function insertInOrder (entries: OutboxEntry[], entry: OutboxEntry): void {
  const position = positionOf(entry)
  let at = entries.length
  while (at > 0 && !before(entries[at - 1]!, position)) at--
  entries.splice(at, 0, entry)
}

/** A place in a peer's queue: priority rank, then id. */
interface Position {
  rank: number
  lastId: string
}

function positionOf (entry: Pick<OutboxEntry, 'priority' | 'id'>): Position {
  return { rank: RANK[entry.priority] ?? 1, lastId: entry.id }
}

/** Does `entry` sort before `position`? */
function before (entry: Pick<OutboxEntry, 'priority' | 'id'>, position: Position): boolean {
  const rank = RANK[entry.priority] ?? 1
  return rank < position.rank || (rank === position.rank && entry.id < position.lastId)
}

/** Frames, each behind its unsigned-varint length, in one buffer (one `stream.send`). */
function frameAll (payloads: Uint8Array[]): Uint8Array {
  let total = 0
  for (const p of payloads) total += varint.encodingLength(p.byteLength) + p.byteLength
  const out = new Uint8Array(total)
  let at = 0
  for (const p of payloads) {
    varint.encodeUint8Array(p.byteLength, out, at)
    at += varint.encodingLength(p.byteLength)
    out.set(p, at)
    at += p.byteLength
  }
  return out
}

const utf8 = new TextEncoder()

/** `encodeDeliverResult`, without a generic JSON encoding for the common case (an ack of a ULID). */
function encodeResult (result: DeliverResult): Uint8Array {
  if (result.t === 'ack') return utf8.encode(`{"v":1,"t":"ack","id":"${result.id}","status":"${result.status}"}`)
  return encodeDeliverResult(result)
}

const ACK_PREFIX = '{"v":1,"t":"ack","id":"'
const ULID = /^[0-9A-HJKMNP-TV-Z]{26}$/
const utf8Decoder = new TextDecoder()

/**
 * `decodeDeliverResult`, with a fast path for the answer that comes back for nearly every frame:
 * exactly the ack our receivers write. Anything else goes through the full schema check.
 */
function decodeResult (bytes: Uint8Array): DeliverResult {
  // {"v":1,"t":"ack","id":"<26>","status":"stored"|"duplicate"}
  if (bytes.byteLength === 69 || bytes.byteLength === 72) {
    const text = utf8Decoder.decode(bytes)
    if (text.startsWith(ACK_PREFIX)) {
      const id = text.slice(23, 49)
      const rest = text.slice(49)
      if (ULID.test(id) && (rest === '","status":"stored"}' || rest === '","status":"duplicate"}')) {
        return { v: 1, t: 'ack', id, status: rest.length === 20 ? 'stored' : 'duplicate' }
      }
    }
  }
  return decodeDeliverResult(bytes)
}

function nackReasonFor (err: Error): NackReason {
  switch (err.name) {
    case 'TooLargeError': return 'too_large'
    case 'ExpiredError': return 'expired'
    case 'UnsupportedVersionError': return 'unsupported_version'
    case 'InvalidSignatureError': return 'unauthorized'
    default: return 'invalid_request'
  }
}
