import { logger } from '@libp2p/logger'
import { peerIdFromString } from '@libp2p/peer-id'
import { TypedEventEmitter } from 'main-event'
import {
  createEnvelope,
  decodeDeliverResult,
  DELIVER_PROTOCOL,
  encodeDeliverResult,
  MAX_FRAME_SIZE,
  openEnvelope,
  sealEnvelope
} from '@persona-mesh/protocol'
import { FrameChannel } from '../framing.js'
import { TokenBuckets } from '../policy/token-bucket.js'
import {
  DEFAULT_DELIVERY_RATE,
  DELIVERY_PAGE,
  DELIVERY_STREAM_TIMEOUT_MS,
  DELIVERY_WINDOW,
  MAX_DELIVER_STREAMS,
  RETRY_MAX_MS,
  RETRY_MIN_MS,
  SWEEP_INTERVAL_MS
} from './constants.js'
import type { DeliveryEvents, EnvelopeOptions, SendResult } from './index.js'
import type { RateLimit } from '../policy/token-bucket.js'
import type { Connection, Libp2p, PeerId, PrivateKey, Stream } from '@libp2p/interface'
import type { DeliverResult, JsonValue, MessageEnvelope, NackReason } from '@persona-mesh/protocol'
import type { InboxEntry, MeshStore, OutboxEntry } from '@persona-mesh/store'

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
  audit?: (event: { kind: string, peer: string, id: string, trace?: string, outcome: string, detail?: JsonValue }) => void
}

/** Refusals the sender cannot fix by retrying: the message ends `failed`. */
const PERMANENT: ReadonlySet<NackReason> = new Set(['invalid_request', 'unauthorized', 'too_large', 'unsupported_version', 'incapable', 'loop_detected'])

interface Verified {
  envelope: MessageEnvelope
  bytes: Uint8Array
  decision: AcceptDecision
}

/** A frame after verification: ready to store, or already answered with a refusal. */
type Checked = Verified | DeliverResult

/** Most envelopes stored in one synced batch. */
const MAX_ACCEPT_BATCH = 512

interface PeerState {
  flushing: boolean
  again: boolean
  retryAt: number
  delay: number
}

interface InFlight {
  entry: OutboxEntry
  settled: boolean
}

/**
 * Durable delivery (DESIGN §7). `send()` resolves once the sealed envelope is synced into the
 * outbox; a per-recipient flush then streams queued envelopes over `/persona-mesh/deliver/1.0.0`
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
  private readonly acked: Array<Pick<OutboxEntry, 'id' | 'to'>> = []
  private readonly self: string
  private readonly onIdentify = (evt: CustomEvent<{ peerId: PeerId, protocols: string[] }>): void => {
    if (evt.detail.protocols.includes(DELIVER_PROTOCOL)) this.kick(evt.detail.peerId.toString(), true)
  }

  constructor (private readonly components: DeliveryComponents, private readonly init: DeliveryInit = {}) {
    super()
    this.buckets = new TokenBuckets(init.rateLimit ?? DEFAULT_DELIVERY_RATE)
    this.maxFrameSize = init.maxFrameSize ?? MAX_FRAME_SIZE
    this.self = components.libp2p.peerId.toString()
  }

  async start (): Promise<void> {
    if (this.started) return
    this.started = true
    this.stopController = new AbortController()
    await this.components.libp2p.handle(DELIVER_PROTOCOL, (stream, connection) => { this.receive(stream, connection) }, {
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
    await this.components.libp2p.unhandle(DELIVER_PROTOCOL).catch(() => {})
    await Promise.all([...this.inbound].map(async c => { await c.close() }))
    this.inbound.clear()
  }

  /** Seal an envelope for `to` (a PeerId), queue it durably, and start delivering it. */
  async send (to: string, body: JsonValue, options: EnvelopeOptions = {}): Promise<SendResult> {
    const { store, privateKey } = this.components
    const seq = await store.outbox.allocateSeq(1, options.signal !== undefined ? { signal: options.signal } : {})
    const envelope = createEnvelope({
      from: this.self,
      to,
      body,
      seq,
      kind: options.kind ?? 'message',
      ...(options.thread !== undefined ? { thread: options.thread } : {}),
      ...(options.replyTo !== undefined ? { replyTo: options.replyTo } : {}),
      ...(options.priority !== undefined ? { priority: options.priority } : {}),
      ...(options.ttl !== undefined ? { ttl: options.ttl } : {}),
      ...(options.trace !== undefined ? { trace: options.trace } : {}),
      ...(options.hop !== undefined ? { hop: options.hop } : {})
    })
    const bytes = await sealEnvelope(envelope, privateKey, { maxSize: this.maxFrameSize })
    await store.outbox.add([{
      id: envelope.id,
      to,
      priority: envelope.priority,
      seq,
      createdAt: envelope.createdAt,
      expiresAt: envelope.expiresAt,
      bytes
    }], options.signal !== undefined ? { signal: options.signal } : {})
    this.audit('send', to, envelope, 'queued')
    if (to === this.self) {
      // a note to self: straight into our own inbox, same path as a delivery
      void this.deliverLocally(envelope, bytes)
    } else {
      this.kick(to, false)
    }
    return { id: envelope.id, to, status: 'queued' }
  }

  /** Try delivering to `peer` now (connected, discovered, or just queued for). */
  kick (peer: string, reset: boolean): void {
    if (!this.started || peer === this.self) return
    const state = this.state(peer)
    if (reset) {
      state.retryAt = 0
      state.delay = RETRY_MIN_MS
    }
    if (state.flushing) {
      state.again = true
      return
    }
    if (Date.now() < state.retryAt) return
    if (this.components.store.outbox.count().perPeer[peer] === undefined) return
    void this.flush(peer, state)
  }

  private state (peer: string): PeerState {
    let state = this.peers.get(peer)
    if (state === undefined) {
      state = { flushing: false, again: false, retryAt: 0, delay: RETRY_MIN_MS }
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
    try {
      const complete = await this.deliverAll(peer, state)
      if (complete) {
        state.delay = RETRY_MIN_MS
        state.retryAt = 0
      }
    } catch (err) {
      this.backoff(state, (err as Error).message, peer)
    } finally {
      state.flushing = false
      if (state.again && this.started) this.kick(peer, false)
    }
  }

  /** Stream everything queued for `peer`; `true` if the queue was drained without refusals. */
  private async deliverAll (peer: string, state: PeerState): Promise<boolean> {
    const { libp2p, store } = this.components
    let stream: Stream | undefined
    let channel: FrameChannel | undefined
    const inFlight = new Map<string, InFlight>()
    let windowOpen = Promise.withResolvers<void>()
    let broken: Error | undefined
    let paused = false
    const settleOne = (id: string): void => {
      const slot = inFlight.get(id)
      if (slot === undefined || slot.settled) return
      slot.settled = true
      inFlight.delete(id)
      windowOpen.resolve()
    }
    try {
      for (;;) {
        if (!this.started) return false
        const now = Date.now()
        const page = (await store.outbox.pending(peer, { limit: DELIVERY_PAGE })).filter(e => e.nextAttemptAt <= now && e.expiresAt >= now)
        if (page.length === 0) return !paused
        if (channel === undefined) {
          stream = await libp2p.dialProtocol(peerIdFromString(peer), DELIVER_PROTOCOL, {
            signal: AbortSignal.any([AbortSignal.timeout(10_000), this.stopController.signal])
          })
          channel = new FrameChannel(stream, {
            maxFrameSize: this.maxFrameSize,
            onFrame: (bytes) => {
              let result: DeliverResult
              try {
                result = decodeDeliverResult(bytes)
              } catch (err) {
                broken = err as Error
                windowOpen.resolve()
                return
              }
              const id = result.id
              if (id === null) {
                broken = new Error(`receiver refused a frame: ${result.t === 'nack' ? result.reason : 'unknown'}`)
                windowOpen.resolve()
                return
              }
              const slot = inFlight.get(id)
              if (slot === undefined) return
              settleOne(id)
              if (result.t === 'ack') {
                void this.settle(slot.entry, { status: 'delivered' })
              } else {
                if (result.reason === 'expired') {
                  void this.settle(slot.entry, { status: 'expired', reason: result.message ?? 'the receiver found it expired' })
                } else if (PERMANENT.has(result.reason)) {
                  void this.settle(slot.entry, { status: 'failed', reason: `${result.reason}${result.message !== undefined ? `: ${result.message}` : ''}` })
                } else {
                  // overloaded / timeout / internal_error: try it again later, back off the peer
                  paused = true
                  const attempts = slot.entry.attempts + 1
                  void store.outbox.reschedule(slot.entry.id, {
                    attempts,
                    nextAttemptAt: Date.now() + Math.min(RETRY_MIN_MS * 2 ** Math.min(attempts, 6), RETRY_MAX_MS),
                    lastError: `${result.reason}${result.message !== undefined ? `: ${result.message}` : ''}`
                  }).catch(() => {})
                }
              }
            },
            onFramingError: (err) => { broken = err; windowOpen.resolve() },
            onClose: (err) => {
              broken ??= err ?? new Error('delivery stream closed')
              windowOpen.resolve()
            }
          })
        }
        for (const entry of page) {
          if (inFlight.has(entry.id)) continue
          while (inFlight.size >= DELIVERY_WINDOW && broken === undefined) {
            windowOpen = Promise.withResolvers<void>()
            await this.waitOrTimeout(windowOpen.promise)
          }
          if (broken !== undefined) throw broken
          if (paused) break
          inFlight.set(entry.id, { entry, settled: false })
          await channel.send(entry.bytes)
        }
        // wait for this page to be answered before reading the next (the store still lists unacked entries)
        while (inFlight.size > 0 && broken === undefined) {
          windowOpen = Promise.withResolvers<void>()
          await this.waitOrTimeout(windowOpen.promise)
        }
        if (broken !== undefined) throw broken
        if (paused) {
          this.backoff(state, 'the receiver asked us to slow down', peer)
          return false
        }
      }
    } finally {
      if (channel !== undefined) await channel.close()
    }
  }

  private async waitOrTimeout (promise: Promise<void>): Promise<void> {
    let timer: ReturnType<typeof setTimeout> | undefined
    try {
      await Promise.race([
        promise,
        new Promise<void>((_resolve, reject) => {
          timer = setTimeout(() => { reject(new Error(`no answer within ${DELIVERY_STREAM_TIMEOUT_MS} ms`)) }, DELIVERY_STREAM_TIMEOUT_MS)
        })
      ])
    } finally {
      clearTimeout(timer)
    }
  }

  private async settle (entry: Pick<OutboxEntry, 'id' | 'to'>, outcome: { status: 'delivered' } | { status: 'expired' | 'failed', reason: string }): Promise<void> {
    if (outcome.status === 'delivered') {
      // acks come in bursts: settle them in one synced write per turn of the event loop
      this.acked.push(entry)
      if (this.acked.length === 1) setImmediate(() => { void this.settleAcked() })
      return
    }
    try {
      const [result] = await this.components.store.outbox.settle([entry.id], outcome)
      if (result?.changed !== true) return
      this.audit(outcome.status, entry.to, { id: entry.id }, outcome.status, outcome.reason)
      this.emit(`message:${outcome.status}`, { id: entry.id, to: entry.to, reason: outcome.reason })
    } catch (err) {
      log.error('could not settle %s: %e', entry.id, err)
    }
  }

  private async settleAcked (): Promise<void> {
    const entries = this.acked.splice(0)
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
    this.init.audit?.({ kind, peer, id: envelope.id, ...(envelope.trace !== undefined ? { trace: envelope.trace } : {}), outcome, ...(detail !== undefined ? { detail } : {}) })
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
    // frames are verified as they arrive (in parallel) and stored in arrival order, in batches:
    // everything that arrived while the previous batch was being synced goes in the next one
    const queue: Array<Promise<Checked>> = []
    let draining = false
    // a sender that finished writing gets the stream closed once every frame is answered, so
    // half-open streams do not pile up against the per-connection stream limit
    let senderDone = false
    const closeIfDone = (): void => {
      if (senderDone && !draining && queue.length === 0) void channel.close()
    }
    stream.addEventListener('remoteCloseWrite', () => { senderDone = true; closeIfDone() })
    const drain = async (): Promise<void> => {
      draining = true
      try {
        while (queue.length > 0) {
          const batch = await Promise.all(queue.splice(0, MAX_ACCEPT_BATCH))
          const results = await this.storeBatch(batch, remote)
          if (!channel.open) continue
          for (const result of results) await channel.send(encodeDeliverResult(result))
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
        queue.push(this.check(bytes, remote))
        if (!draining) void drain()
      },
      onFramingError: (err) => {
        log('peer %s broke delivery framing: %s', remote, err.message)
        if (channel.open) {
          void channel.send(encodeDeliverResult({ v: 1, t: 'nack', id: null, reason: 'too_large', message: `frame larger than ${this.maxFrameSize} bytes or badly framed` }))
            .finally(() => { void channel.close() })
        }
      },
      onClose: () => { this.inbound.delete(channel) }
    })
    this.inbound.add(channel)
  }

  /** Verify one frame: signature, signer == from, version, schema, addressed to us, not expired, within rate. */
  private async check (bytes: Uint8Array, remote: string): Promise<Checked> {
    let envelope: MessageEnvelope
    try {
      envelope = (await openEnvelope(bytes, { maxSize: this.maxFrameSize, allowExpired: true })).envelope
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
    if (envelope.expiresAt < Date.now()) return refuse('expired', `expired at ${new Date(envelope.expiresAt).toISOString()}`)
    if (envelope.to !== this.self) return refuse('invalid_request', 'not addressed to this peer')
    if (envelope.kind === 'broadcast') return refuse('invalid_request', 'broadcasts travel by gossip, not delivery')
    if (!this.buckets.take(remote)) return refuse('overloaded', 'delivery rate limit: slow down')
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
    let statuses: Array<'stored' | 'duplicate'> = []
    let failure: Error | undefined
    if (accepted.length > 0) {
      try {
        const now = Date.now()
        statuses = await this.components.store.inbox.accept(accepted.map(c => ({ envelope: c.envelope, bytes: c.bytes, receivedAt: now, quarantined: c.decision === 'quarantine' })))
      } catch (err) {
        failure = err as Error
        log.error('could not store a batch from %s: %e', remote, err)
      }
    }
    let i = 0
    return batch.map((checked) => {
      if ('t' in checked) return checked
      const status = statuses[i++]
      const { envelope, decision } = checked
      if (failure !== undefined || status === undefined) {
        return { v: 1, t: 'nack', id: envelope.id, reason: 'internal_error', message: 'the receiver could not store it; retry later' }
      }
      if (status === 'stored') {
        this.audit('receive', remote, envelope, decision === 'quarantine' ? 'quarantined' : 'stored')
        void this.announce(envelope.id)
      }
      return { v: 1, t: 'ack', id: envelope.id, status }
    })
  }

  private async announce (id: string): Promise<void> {
    const entry: InboxEntry | undefined = await this.components.store.inbox.get(id).catch(() => undefined)
    if (entry !== undefined) this.emit('message:received', entry)
  }

  private async deliverLocally (envelope: MessageEnvelope, bytes: Uint8Array): Promise<void> {
    const [result] = await this.storeBatch([{ envelope, bytes, decision: 'inbox' }], this.self)
    if (result === undefined) return
    const entry = { id: envelope.id, to: envelope.to, priority: envelope.priority }
    if (result.t === 'ack') {
      await this.settle(entry, { status: 'delivered' })
    } else {
      await this.settle(entry, { status: 'failed', reason: result.message ?? result.reason })
    }
  }
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
