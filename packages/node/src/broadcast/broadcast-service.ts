import { logger } from '@libp2p/logger'
import { TopicValidatorResult } from '@libp2p/gossipsub'
import { createEnvelope, MAX_FRAME_SIZE, openEnvelope, sealEnvelope, USER_TOPIC_PREFIX } from '@persona-mesh/protocol'
import { z } from 'zod'
import { InvalidArgumentError } from '../errors.js'
import type { GossipSub } from '@libp2p/gossipsub'
import type { Libp2p, PrivateKey } from '@libp2p/interface'
import type { JsonValue } from '@persona-mesh/protocol'
import type { InboxEntry, MeshStore } from '@persona-mesh/store'

const log = logger('persona-mesh:broadcast')

/** Where the subscribed topics are remembered across restarts. */
const SUBSCRIPTIONS_KEY = 'broadcast/subscriptions'
/** Broadcasts are short-lived: a day unless said otherwise. */
export const DEFAULT_BROADCAST_TTL_MS = 24 * 60 * 60 * 1000
export const MAX_SUBSCRIPTIONS = 64
/** Broadcast ids remembered in memory to Ignore duplicates without touching the disk. */
const SEEN_LIMIT = 10_000

export const TopicNameSchema = z.string().regex(/^[a-z0-9][a-z0-9._-]{0,63}$/i, 'topic names are 1-64 letters, digits, ".", "_" or "-"')

export interface BroadcastResult {
  id: string
  topic: string
  /** Peers the message was sent to directly (gossip spreads it further). */
  recipients: number
  /** Subscribers of the topic this node knows of. */
  subscribers: number
  /** Present when nobody was reached: broadcast is best-effort and was not queued. */
  warning?: string
}

export interface BroadcastComponents {
  libp2p: Libp2p<{ pubsub: GossipSub }>
  privateKey: PrivateKey
  store: MeshStore
}

export interface BroadcastInit {
  maxFrameSize?: number
  onReceived: (entry: InboxEntry) => void
}

/**
 * User broadcasts over gossipsub topics `persona-mesh/t/<topic>`. Best-effort by nature: peers
 * offline at the time miss the message (use `send` for anything that must arrive). Each message
 * is a signed envelope; the topic validator Rejects bad signatures, expired, oversized or
 * mis-addressed messages (which costs the forwarder gossip score) and Ignores duplicates.
 * Received broadcasts land in the inbox with their topic. Subscriptions survive restarts.
 */
export class BroadcastService {
  private readonly subscribed = new Set<string>()
  private readonly seen = new Set<string>()
  private readonly maxFrameSize: number
  private started = false

  constructor (private readonly components: BroadcastComponents, private readonly init: BroadcastInit) {
    this.maxFrameSize = init.maxFrameSize ?? MAX_FRAME_SIZE
  }

  async start (): Promise<void> {
    if (this.started) return
    this.started = true
    const saved = await this.components.store.meta.get<string[]>(SUBSCRIPTIONS_KEY) ?? []
    for (const topic of saved) {
      if (TopicNameSchema.safeParse(topic).success) this.join(topic)
    }
  }

  async stop (): Promise<void> {
    if (!this.started) return
    this.started = false
    for (const topic of this.subscribed) this.leave(topic)
  }

  topics (): string[] {
    return [...this.subscribed].sort()
  }

  async subscribe (topic: string): Promise<string[]> {
    checkTopic(topic)
    if (!this.subscribed.has(topic)) {
      if (this.subscribed.size >= MAX_SUBSCRIPTIONS) throw new InvalidArgumentError(`at most ${MAX_SUBSCRIPTIONS} topics`)
      this.join(topic)
      await this.persist()
    }
    return this.topics()
  }

  async unsubscribe (topic: string): Promise<string[]> {
    checkTopic(topic)
    if (this.subscribed.has(topic)) {
      this.leave(topic)
      this.subscribed.delete(topic)
      await this.persist()
    }
    return this.topics()
  }

  async broadcast (topic: string, body: JsonValue, options: { ttl?: number, thread?: string } = {}): Promise<BroadcastResult> {
    checkTopic(topic)
    const { libp2p, privateKey, store } = this.components
    const seq = await store.outbox.allocateSeq()
    const envelope = createEnvelope({
      kind: 'broadcast',
      from: libp2p.peerId.toString(),
      to: `topic:${topic}`,
      body,
      seq,
      ttl: options.ttl ?? DEFAULT_BROADCAST_TTL_MS,
      ...(options.thread !== undefined ? { thread: options.thread } : {})
    })
    const bytes = await sealEnvelope(envelope, privateKey, { maxSize: this.maxFrameSize })
    const gossipTopic = USER_TOPIC_PREFIX + topic
    const { recipients } = await libp2p.services.pubsub.publish(gossipTopic, bytes)
    const result: BroadcastResult = {
      id: envelope.id,
      topic,
      recipients: recipients.length,
      subscribers: libp2p.services.pubsub.getSubscribers(gossipTopic).length
    }
    if (result.recipients === 0) {
      result.warning = `nobody is reachable on topic ${topic}: the broadcast reached no one and was not queued (use send for messages that must arrive)`
    }
    return result
  }

  private join (topic: string): void {
    const gossipTopic = USER_TOPIC_PREFIX + topic
    const pubsub = this.components.libp2p.services.pubsub
    pubsub.topicValidators.set(gossipTopic, async (_peer, message) => this.validate(topic, message.data))
    pubsub.subscribe(gossipTopic)
    this.subscribed.add(topic)
  }

  private leave (topic: string): void {
    const gossipTopic = USER_TOPIC_PREFIX + topic
    const pubsub = this.components.libp2p.services.pubsub
    pubsub.topicValidators.delete(gossipTopic)
    try { pubsub.unsubscribe(gossipTopic) } catch {}
  }

  private async persist (): Promise<void> {
    await this.components.store.meta.put(SUBSCRIPTIONS_KEY, this.topics())
  }

  private async validate (topic: string, data: Uint8Array): Promise<TopicValidatorResult> {
    let opened: Awaited<ReturnType<typeof openEnvelope>>
    try {
      opened = await openEnvelope(data, { maxSize: this.maxFrameSize })
    } catch (err) {
      log('rejecting a broadcast on %s: %s', topic, (err as Error).message)
      return TopicValidatorResult.Reject
    }
    const { envelope, bytes } = opened
    if (envelope.kind !== 'broadcast' || envelope.to !== `topic:${topic}`) {
      log('rejecting a broadcast addressed to %s on topic %s', envelope.to, topic)
      return TopicValidatorResult.Reject
    }
    if (this.seen.has(envelope.id)) return TopicValidatorResult.Ignore
    this.seen.add(envelope.id)
    if (this.seen.size > SEEN_LIMIT) this.seen.delete(this.seen.values().next().value!)
    // a broadcast is best-effort: it is announced at once and forwarded, its inbox write (which
    // dedupes for good, across restarts) follows unsynced; only a crash in the next moments loses it
    let received: ReturnType<MeshStore['inbox']['receive']>
    try {
      received = this.components.store.inbox.receive({ envelope, bytes, receivedAt: Date.now(), topic })
    } catch (err) {
      log.error('could not take a broadcast into the inbox: %e', err)
      return TopicValidatorResult.Accept
    }
    if (received === undefined) return TopicValidatorResult.Ignore
    received.written.catch((err: Error) => { log.error('could not store broadcast %s: %e', envelope.id, err) })
    const { entry } = received
    // after the validator returns, so gossipsub forwards before listeners run
    queueMicrotask(() => { this.init.onReceived(entry) })
    return TopicValidatorResult.Accept
  }
}

function checkTopic (topic: string): void {
  const parsed = TopicNameSchema.safeParse(topic)
  if (!parsed.success) throw new InvalidArgumentError(`invalid topic ${JSON.stringify(topic)}: ${parsed.error.issues[0]?.message}`)
}
