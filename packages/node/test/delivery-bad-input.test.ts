/**
 * Hostile input on `/persona-mesh/deliver/1.1.0` (and 1.0.0). The attacker node opens raw streams to a victim
 * and writes varint-length-prefixed frames (sealed envelopes, or garbage); the victim answers each
 * frame with a JSON result frame `{v:1,t:'ack'|'nack',id,...}`. Nothing refused may reach the inbox,
 * and after every case an honest node's real `send()` to the victim must still end delivered.
 * Real nodes over TCP on 127.0.0.1, mDNS off; waits are on conditions, with timeouts.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import type { PrivateKey, Stream } from '@libp2p/interface'
import { LengthPrefixedDecoder } from '@libp2p/utils'
import type { MeshNode } from '@persona-mesh/node'
import { createMeshNode } from '@persona-mesh/node'
import type { DeliverResult, EnvelopeInit, JsonValue, MessageEnvelope, NackReason } from '@persona-mesh/protocol'
import {
  canonicalEncode,
  createEnvelope,
  DELIVER_PROTOCOL,
  DELIVER_PROTOCOL_1_0,
  decodeDeliverResult,
  ENVELOPE_DOMAIN,
  ENVELOPE_PAYLOAD_TYPE,
  MAX_FRAME_SIZE,
  sealEnvelope,
  sealEnvelopes,
  sealPayload
} from '@persona-mesh/protocol'
import * as varint from 'uint8-varint'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { waitFor } from './harness.js'
import { concat, lengthPrefixed, RawStream } from './raw-stream.js'
import { randomBytes } from '../../../test/support/random.js'

const WAIT_MS = 15_000
/** The victim's frame (and so envelope) limit. */
const LIMIT = 64 * 1024

let home: string
/** Refuses frames over 64 KiB. */
let victim: MeshNode
/** Accepts at most 20 deliveries per second per peer (burst 20). */
let throttled: MeshNode
let attacker: MeshNode
let attackerKey: PrivateKey
let honest: MeshNode
/** The attacker's envelope sequence numbers: unique per envelope unless a case reuses one on purpose. */
let nextSeq = 1_000_000

const delivered = new Set<string>()
const failed = new Map<string, string>()

beforeAll(async () => {
  home = await mkdtemp(join(tmpdir(), 'pmesh-deliver-bad-'))
  const node = async (name: string, extra: Parameters<typeof createMeshNode>[0] = {}): Promise<MeshNode> =>
    createMeshNode({ name, home, mdns: false, listen: ['/ip4/127.0.0.1/tcp/0'], ...extra })
  attackerKey = await generateKeyPair('Ed25519')
  victim = await node('victim', { rpc: { maxFrameSize: LIMIT } })
  throttled = await node('throttled', { deliveryRateLimit: { rate: 20, burst: 20 } })
  attacker = await node('attacker', { privateKey: attackerKey })
  honest = await node('honest')
  honest.addEventListener('message:delivered', (evt) => { delivered.add(evt.detail.id) })
  honest.addEventListener('message:failed', (evt) => { failed.set(evt.detail.id, evt.detail.reason ?? '') })
  for (const target of [victim, throttled]) {
    await attacker.dial(target.multiaddrs[0]!)
    await honest.dial(target.multiaddrs[0]!)
  }
})

afterAll(async () => {
  await Promise.allSettled([victim, throttled, attacker, honest].filter(n => n !== undefined).map(async n => { await n.stop() }))
  await rm(home, { recursive: true, force: true })
})

/** The honest node's real `send()` to `target` still ends delivered, into the inbox. */
async function honestSendWorks (tag: string, target: MeshNode = victim): Promise<void> {
  const { id } = await honest.send(target.peerId, { tag })
  await waitFor(() => delivered.has(id) || failed.has(id), `the honest message (${tag}) to be delivered`, WAIT_MS)
  expect(failed.get(id)).toBeUndefined()
  expect(await target.inbox.get(id)).toMatchObject({ from: honest.peerId, body: { tag } })
  expect(target.isStarted).toBe(true)
}

/** Where a batch-sealed envelope's key, signature and proof start (see the protocol's batch.ts). */
const KEY_AT = 4
const SIGNATURE_AT = 40
const PROOF_AT = 104

const utf8 = (s: string): Uint8Array => new TextEncoder().encode(s)

/** An envelope from the attacker to `to` (the victim unless said otherwise), with a fresh seq. */
function envelope (init: Partial<EnvelopeInit> = {}, to: MeshNode = victim): MessageEnvelope {
  return createEnvelope({ from: attacker.peerId, to: to.peerId, body: { n: nextSeq }, seq: nextSeq++, ...init })
}

async function seal (env: MessageEnvelope): Promise<Uint8Array> {
  return sealEnvelope(env, attackerKey, { maxSize: 4 * MAX_FRAME_SIZE })
}

/** Sign any payload the way envelopes are signed (it need not be a valid envelope). */
async function sealRaw (payload: Uint8Array, key: PrivateKey = attackerKey): Promise<Uint8Array> {
  return sealPayload(ENVELOPE_DOMAIN, ENVELOPE_PAYLOAD_TYPE, payload, key, 4 * MAX_FRAME_SIZE)
}

/** A raw deliver stream from the attacker: frames out, decoded result frames and close events in. */
class RawDeliver extends RawStream<DeliverResult> {
  static async open (target: MeshNode = victim, protocol = DELIVER_PROTOCOL): Promise<RawDeliver> {
    return new RawDeliver(await attacker.libp2p.dialProtocol(target.libp2p.peerId, protocol))
  }

  constructor (stream: Stream) {
    super(stream, decodeDeliverResult, summary, WAIT_MS)
  }

  get results (): DeliverResult[] {
    return this.frames
  }

  /** Wait for `n` answers (or the end of the stream) and check there are exactly `n`. */
  async answers (n: number): Promise<Array<ReturnType<typeof summary>>> {
    await this.until(() => this.results.length >= n || this.ended, `${n} answer(s)`)
    expect(this.results.map(summary)).toHaveLength(n)
    return this.results.map(summary)
  }
}

function summary (result: DeliverResult): { t: string, id: string | null, reason?: NackReason, status?: string } {
  return result.t === 'nack' ? { t: 'nack', id: result.id, reason: result.reason } : { t: 'ack', id: result.id, status: result.status }
}

const ack = (id: string, status: 'stored' | 'duplicate' = 'stored'): ReturnType<typeof summary> => ({ t: 'ack', id, status })
const nack = (id: string | null, reason: NackReason): ReturnType<typeof summary> => ({ t: 'nack', id, reason })

/** Entries from the attacker in `node`'s inbox (and quarantine). */
async function fromAttacker (node: MeshNode = victim): Promise<string[]> {
  const ids: string[] = []
  for (const quarantined of [false, true]) {
    let cursor: string | undefined
    for (let page = 0; page < 100; page++) {
      const { entries, nextCursor, more } = await node.inbox.read({ from: attacker.peerId, quarantined, limit: 1000, ...(cursor !== undefined ? { cursor } : {}) })
      ids.push(...entries.map(e => e.id))
      if (!more) break
      cursor = nextCursor
    }
  }
  return ids
}

/**
 * Run one hostile case on a fresh raw stream, abort it, check the attacker's entries in the inbox
 * grew by exactly the ids `body` returns (none if it returns nothing), then the honest check.
 */
async function hostile (name: string, body: (raw: RawDeliver) => Promise<unknown>, target: MeshNode = victim, protocol = DELIVER_PROTOCOL): Promise<void> {
  const before = await fromAttacker(target)
  const raw = await RawDeliver.open(target, protocol)
  let stored: string[] = []
  try {
    const result = await body(raw)
    if (Array.isArray(result)) stored = result as string[]
    expect(raw.garbage).toEqual([])
  } finally {
    raw.abort()
  }
  expect((await fromAttacker(target)).filter(id => !before.includes(id)).sort()).toEqual([...stored].sort())
  await honestSendWorks(name, target)
}

describe('deliver protocol under bad input', () => {
  it('baseline: the honest node delivers, and a valid raw envelope is acked stored', async () => {
    await honestSendWorks('baseline')
    await hostile('valid raw', async (raw) => {
      const env = envelope()
      raw.sendFrame(await seal(env))
      expect(await raw.answers(1)).toEqual([ack(env.id)])
      expect(await victim.inbox.get(env.id)).toMatchObject({ from: attacker.peerId, body: env.body })
      return [env.id]
    })
  })

  it('forged: an envelope claiming to be from the honest peer but signed by the attacker → nack unauthorized; a tampered one too', async () => {
    await hostile('forged', async (raw) => {
      const forged = envelope({ from: honest.peerId, body: { text: 'trust me, I am honest' } })
      raw.sendFrame(await sealRaw(canonicalEncode(forged)))
      // a genuine envelope with one byte of its signed payload changed
      const genuine = envelope({ body: { text: 'pay 10' } })
      const tampered = await seal(genuine)
      const at = Buffer.from(tampered).indexOf('pay 10')
      expect(at).toBeGreaterThan(0)
      tampered[at + 4] = '9'.charCodeAt(0)
      raw.sendFrame(tampered)
      expect(await raw.answers(2)).toEqual([nack(null, 'unauthorized'), nack(null, 'unauthorized')])
      expect(await victim.inbox.get(forged.id)).toBeUndefined()
      expect(await victim.inbox.get(genuine.id)).toBeUndefined()
      expect((await victim.inbox.read({ from: honest.peerId, limit: 1000 })).entries.some(e => e.id === forged.id)).toBe(false)
      expect(raw.ended).toBe(false)
    })
  })

  it('batch-sealed: a batch is acked stored; a tampered leaf, a forged proof, a borrowed signature, or the honest peer\'s key put in → nack unauthorized, none stored', async () => {
    await hostile('batch-sealed', async (raw) => {
      const good = [envelope(), envelope(), envelope()]
      const sealed = await sealEnvelopes(good, attackerKey)
      const victims = [envelope({ body: { text: 'pay 10' } }), envelope(), envelope(), envelope()]
      const [tampered, forgedProof, borrowed, honestKey] = await sealEnvelopes(victims, attackerKey)
      const at = Buffer.from(tampered!).indexOf('pay 10')
      tampered![at + 4] = '9'.charCodeAt(0)
      forgedProof![PROOF_AT + 5]! ^= 1
      borrowed!.set(sealed[0]!.subarray(SIGNATURE_AT, PROOF_AT), SIGNATURE_AT)
      honestKey!.set(honest.libp2p.peerId.publicKey!.raw, KEY_AT)
      for (const frame of [...sealed, tampered!, forgedProof!, borrowed!, honestKey!]) raw.sendFrame(frame)
      expect(await raw.answers(7)).toEqual([...good.map(e => ack(e.id)), ...Array.from({ length: 4 }, () => nack(null, 'unauthorized'))])
      for (const e of victims) expect(await victim.inbox.get(e.id)).toBeUndefined()
      expect(await victim.inbox.get(good[1]!.id)).toMatchObject({ from: attacker.peerId, body: good[1]!.body })
      return good.map(e => e.id)
    })
  })

  it('deliver/1.0.0 takes envelopes sealed alone, as before; a batch-sealed one there → nack unsupported_version, not stored', async () => {
    await hostile('deliver/1.0.0', async (raw) => {
      const alone = envelope()
      const [batched] = await sealEnvelopes([envelope(), envelope()], attackerKey)
      raw.sendFrame(await seal(alone))
      raw.sendFrame(batched!)
      expect(await raw.answers(2)).toEqual([ack(alone.id), nack(null, 'unsupported_version')])
      expect(raw.ended).toBe(false)
      return [alone.id]
    }, victim, DELIVER_PROTOCOL_1_0)
  })

  it('relayed: a validly signed envelope from a third key, delivered by the attacker → nack unauthorized with the id', async () => {
    await hostile('relayed', async (raw) => {
      const third = await generateKeyPair('Ed25519')
      const relayed = createEnvelope({ from: peerIdFromPrivateKey(third).toString(), to: victim.peerId, body: { text: 'signed by someone else' }, seq: 1 })
      raw.sendFrame(await sealEnvelope(relayed, third))
      expect(await raw.answers(1)).toEqual([nack(relayed.id, 'unauthorized')])
      expect(await victim.inbox.get(relayed.id)).toBeUndefined()
    })
  })

  it('replay: the same bytes again later → ack duplicate, stored once; a new id with a used seq → ack duplicate, not stored', async () => {
    const env = envelope({ body: { text: 'once only' } })
    const bytes = await seal(env)
    await hostile('replay first', async (raw) => {
      raw.sendFrame(bytes)
      expect(await raw.answers(1)).toEqual([ack(env.id)])
      return [env.id]
    })
    // "an hour later": other traffic went through meanwhile, on a new stream
    await hostile('replay later', async (raw) => {
      raw.sendFrame(bytes)
      raw.sendFrame(bytes)
      const sameSeq = envelope({ seq: env.seq, body: { text: 'same seq, new id' } })
      raw.sendFrame(await seal(sameSeq))
      expect(await raw.answers(3)).toEqual([ack(env.id, 'duplicate'), ack(env.id, 'duplicate'), ack(sameSeq.id, 'duplicate')])
      expect(await victim.inbox.get(sameSeq.id)).toBeUndefined()
    })
    expect((await fromAttacker()).filter(id => id === env.id)).toHaveLength(1)
  })

  it('expired: createdAt and expiresAt in the past → nack expired with the id', async () => {
    await hostile('expired', async (raw) => {
      const env = envelope({ createdAt: Date.now() - 2 * 3600_000, ttl: 3600_000 })
      raw.sendFrame(await seal(env))
      expect(await raw.answers(1)).toEqual([nack(env.id, 'expired')])
      expect(await victim.inbox.get(env.id)).toBeUndefined()
    })
  })

  it('addressed to another peer, or a broadcast sent by delivery → nack invalid_request with the id', async () => {
    await hostile('misaddressed', async (raw) => {
      const other = envelope({}, honest)
      const broadcast = envelope({ kind: 'broadcast' })
      const topic = envelope({ kind: 'broadcast', to: 'topic:news' })
      for (const env of [other, broadcast, topic]) raw.sendFrame(await seal(env))
      expect(await raw.answers(3)).toEqual([nack(other.id, 'invalid_request'), nack(broadcast.id, 'invalid_request'), nack(topic.id, 'invalid_request')])
      expect((raw.results[0] as { message?: string }).message).toMatch(/not addressed to this peer/)
      for (const env of [other, broadcast, topic]) expect(await victim.inbox.get(env.id)).toBeUndefined()
    })
  })

  it('well signed but malformed: unknown version → unsupported_version; wrong types, non-canonical, deep nesting → invalid_request', async () => {
    await hostile('malformed', async (raw) => {
      const good = envelope()
      const v2 = { ...envelope(), v: 2 }
      const badPriority = { ...envelope(), priority: 'urgent' }
      const extraField = { ...envelope(), admin: true }
      const nonCanonical = utf8(JSON.stringify(envelope(), null, 2))
      const deep = utf8(JSON.stringify({ ...envelope(), body: null }).replace('"body":null', `"body":${'['.repeat(1000)}${']'.repeat(1000)}`))
      raw.sendFrame(await sealRaw(canonicalEncode(v2 as unknown as JsonValue)))
      raw.sendFrame(await sealRaw(canonicalEncode(badPriority as unknown as JsonValue)))
      raw.sendFrame(await sealRaw(canonicalEncode(extraField as unknown as JsonValue)))
      raw.sendFrame(await sealRaw(nonCanonical))
      raw.sendFrame(await sealRaw(deep))
      raw.sendFrame(await sealRaw(utf8('not json at all')))
      raw.sendFrame(await seal(good))
      expect(await raw.answers(7)).toEqual([
        nack(null, 'unsupported_version'),
        nack(null, 'invalid_request'),
        nack(null, 'invalid_request'),
        nack(null, 'invalid_request'),
        nack(null, 'invalid_request'),
        nack(null, 'invalid_request'),
        ack(good.id)
      ])
      return [good.id]
    })
  })

  it('over the size limit (64 KiB here) → nack too_large with id null, and the stream closes', async () => {
    await hostile('too large', async (raw) => {
      const big = envelope({ body: { pad: 'x'.repeat(LIMIT + 1024) } })
      const bytes = await seal(big)
      expect(bytes.byteLength).toBeGreaterThan(LIMIT)
      raw.sendFrame(bytes)
      await raw.until(() => raw.ended, 'the victim to close the stream')
      expect(raw.results.map(summary)).toEqual([nack(null, 'too_large')])
      expect(await victim.inbox.get(big.id)).toBeUndefined()
    })
    await hostile('4 GiB prefix', async (raw) => {
      raw.send(concat(varint.encode(4 * 1024 ** 3), utf8('{"v":1')))
      await raw.until(() => raw.ended, 'the victim to close the stream')
      expect(raw.results.map(summary)).toEqual([nack(null, 'too_large')])
    })
  })

  it('garbage frames → nack invalid_request (id null) each; the stream keeps working', async () => {
    await hostile('garbage frames', async (raw) => {
      const good = envelope()
      const frames = [randomBytes(1, 200), utf8('{"v":1,"t":"ack"}'), utf8('hello'), new Uint8Array([0x0a, 0x00]), randomBytes(2, 5000)]
      for (const frame of frames) raw.sendFrame(frame)
      raw.sendFrame(await seal(good))
      expect(await raw.answers(frames.length + 1)).toEqual([...frames.map(() => nack(null, 'invalid_request')), ack(good.id)])
      expect(raw.ended).toBe(false)
      return [good.id]
    })
  })

  // seeds (for 4 KiB against a 64 KiB limit): 4 is an impossible length at once, 9 only a partial
  // frame, 10 eleven garbage frames then a partial one, 11 six garbage frames then an impossible length
  it.each([4, 9, 10, 11])('random bytes (seed %i): nacks with id null, too_large and the end of the stream for an impossible length', async (seed) => {
    const bytes = randomBytes(seed, 4096)
    const decoder = new LengthPrefixedDecoder({ maxDataLength: LIMIT })
    let complete = 0
    let overLimit = false
    try {
      for (const _ of decoder.decode(bytes)) complete++
    } catch {
      overLimit = true
    }
    await hostile(`random ${seed}`, async (raw) => {
      raw.send(bytes)
      if (overLimit) {
        await raw.until(() => raw.ended, 'the victim to close the stream')
        const answers = raw.results.map(summary)
        expect(answers).toContainEqual(nack(null, 'too_large'))
        for (const a of answers) expect([nack(null, 'invalid_request'), nack(null, 'too_large')]).toContainEqual(a)
      } else {
        await raw.until(() => raw.results.length >= complete || raw.ended, `${complete} nacks`)
        expect(raw.results.map(summary)).toEqual(Array.from({ length: complete }, () => nack(null, 'invalid_request')))
        expect(raw.ended).toBe(false)
      }
    })
  })

  it('flood: 200 envelopes at once against a 20/s limit → some overloaded, every frame answered in order; an honest sender loses nothing', async () => {
    const envs = Array.from({ length: 200 }, () => envelope({}, throttled))
    const frames = await Promise.all(envs.map(seal))
    const honestIds: string[] = []
    await hostile('flood', async (raw) => {
      raw.send(concat(...frames.map(lengthPrefixed)))
      // the honest node sends during the flood through its real outbox
      honestIds.push(...(await Promise.all(Array.from({ length: 40 }, async (_, i) => honest.send(throttled.peerId, { i })))).map(r => r.id))
      await raw.until(() => raw.results.length >= 200 || raw.ended, '200 answers')
      const answers = raw.results.map(summary)
      expect(answers.map(a => a.id)).toEqual(envs.map(e => e.id))
      const stored = answers.filter(a => a.t === 'ack').map(a => a.id!)
      const refused = answers.filter(a => a.t === 'nack')
      expect(answers.every(a => a.t === 'ack' ? a.status === 'stored' : a.reason === 'overloaded')).toBe(true)
      expect(stored.length).toBeGreaterThanOrEqual(20)
      expect(refused.length).toBeGreaterThan(0)
      for (const a of refused) expect(await throttled.inbox.get(a.id!)).toBeUndefined()
      // every honest message ends delivered (the sender retries `overloaded` with backoff)
      await waitFor(() => honestIds.every(id => delivered.has(id) || failed.has(id)), 'all 40 honest messages to be delivered', 60_000)
      expect(honestIds.filter(id => failed.has(id))).toEqual([])
      const inbox = await throttled.inbox.read({ from: honest.peerId, limit: 1000 })
      expect(inbox.entries.map(e => e.id).sort()).toEqual([...honestIds].sort())
      const attempts = await Promise.all(honestIds.map(async id => (await honest.outbox.get(id))!.attempts))
      console.log(`flood: ${stored.length}/200 flood envelopes stored, ${refused.length} overloaded; ${attempts.filter(a => a > 0).length}/40 honest messages needed a retry`)
      return stored
    }, throttled)
  }, 90_000)

  /**
   * Regression (fixed) (delivery-service.ts, both ends): an honest sender whose limit (256 KiB default) is above
   * the receiver's (64 KiB here) queues a 100 KB message. The receiver breaks the framing on it and
   * answers `too_large` with id null at once (ahead of the answers still due for earlier frames),
   * then closes; the sender cannot tell which message it was, treats it as a broken stream and
   * backs off, and every flush fails the same way: the message is neither failed nor delivered,
   * and everything queued behind it for that peer waits until it expires (7 days).
   * Fix: receiver — in `onFramingError` queue the too_large nack behind the pending answers
   * (`queue.push(Promise.resolve(nack))`, kick `drain`) and close the channel only once `drain`
   * has sent it; sender — in `onFrame`, an answer with `id: null` belongs to the oldest unanswered
   * frame (the first key of `inFlight`, which is in send order): settle that entry by the reason
   * (`too_large` is PERMANENT → `failed`) instead of breaking the whole flush; and end the flush
   * when the receiver closes its end (`stream` 'remoteCloseWrite' → `broken`), else it waits
   * DELIVERY_STREAM_TIMEOUT_MS (30 s) for answers that cannot come.
   */
  it('a message over the receiver\'s limit from an honest sender ends failed (too_large) and does not block the messages behind it', async () => {
    const sender = await createMeshNode({ name: 'big-sender', home, mdns: false, listen: ['/ip4/127.0.0.1/tcp/0'] })
    try {
      const outcomes = new Map<string, string>()
      sender.addEventListener('message:delivered', (evt) => { outcomes.set(evt.detail.id, 'delivered') })
      sender.addEventListener('message:failed', (evt) => { outcomes.set(evt.detail.id, `failed: ${evt.detail.reason ?? ''}`) })
      await sender.dial(victim.multiaddrs[0]!)
      const big = await sender.send(victim.peerId, { pad: 'x'.repeat(100_000) })
      const small = await sender.send(victim.peerId, { text: 'behind the big one' })
      await waitFor(() => outcomes.has(big.id) && outcomes.has(small.id), 'both messages to end', 10_000)
      expect(outcomes.get(big.id)).toMatch(/^failed: too_large/)
      expect(outcomes.get(small.id)).toBe('delivered')
      expect(await victim.inbox.get(big.id)).toBeUndefined()
    } finally {
      await sender.stop()
    }
  })

  it('after all that, the victims still serve the honest node', async () => {
    await honestSendWorks('the end')
    await honestSendWorks('the end', throttled)
    expect(victim.isStarted && throttled.isStarted).toBe(true)
  })
})
