import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { z } from 'zod'
import { WIRE_VERSION } from './constants.js'
import { ExpiredError, InvalidSignatureError } from './errors.js'
import { PeerIdStringSchema } from './ids.js'
import { canonicalEncode, parseJson } from './json.js'
import { decodeVersioned } from './seal.js'
import { openPayload, sealPayload } from './signed.js'
import type { PrivateKey } from '@libp2p/interface'

/** RecordEnvelope domain for capability cards. */
export const CARD_DOMAIN = 'persona-mesh/card'
/** RecordEnvelope payload type for capability cards. */
export const CARD_PAYLOAD_TYPE = new TextEncoder().encode('/persona-mesh/card/1')
/** Largest sealed card accepted. @default 65536 */
export const MAX_CARD_SIZE = 64 * 1024
/** How long a card is valid after it is issued. @default 1 hour */
export const DEFAULT_CARD_LIFETIME_MS = 60 * 60 * 1000

/** Capability and tool names: what `find` matches exactly and DHT provider keys are made of. */
export const CapabilityNameSchema = z.string().regex(/^[a-z0-9][a-z0-9._-]{0,63}$/i, 'use 1-64 letters, digits, ".", "_" or "-"')
const PersonaNameSchema = z.string().regex(/^[a-z0-9][a-z0-9_-]{0,63}$/i, 'not a persona name')
const ShortText = z.string().max(2048)

export const CapabilitySchema = z.strictObject({
  name: CapabilityNameSchema,
  description: ShortText.default(''),
  tags: z.array(z.string().min(1).max(32)).max(16).default([])
})

export const ToolSpecSchema = z.strictObject({
  name: CapabilityNameSchema,
  description: ShortText.default(''),
  inputSchema: z.record(z.string(), z.json()),
  outputSchema: z.record(z.string(), z.json()).optional()
})

const Timestamp = z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER)

/** A persona's signed, expiring self-description (DESIGN §4). */
export const CardSchema = z.strictObject({
  v: z.literal(WIRE_VERSION),
  peerId: PeerIdStringSchema,
  name: PersonaNameSchema,
  description: ShortText,
  seq: z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER),
  issuedAt: Timestamp,
  expiresAt: Timestamp,
  addrs: z.array(z.string().min(1).max(256)).max(32),
  capabilities: z.array(CapabilitySchema).max(64),
  tools: z.array(ToolSpecSchema).max(64),
  topics: z.array(z.string().min(1).max(128)).max(64),
  protocols: z.array(z.string().min(1).max(128)).max(32)
}).refine(c => c.expiresAt > c.issuedAt, { message: 'expiresAt must be after issuedAt', path: ['expiresAt'] })

export type Card = z.infer<typeof CardSchema>
export type Capability = z.infer<typeof CapabilitySchema>
export type ToolSpec = z.infer<typeof ToolSpecSchema>
export type CapabilityInit = z.input<typeof CapabilitySchema>

export interface OpenedCard {
  card: Card
  bytes: Uint8Array
}

/** Sign a card with its persona's key. */
export async function sealCard (card: Card, privateKey: PrivateKey, maxSize: number = MAX_CARD_SIZE): Promise<Uint8Array> {
  const checked = decodeVersioned(CardSchema, card, 'card')
  if (checked.peerId !== peerIdFromPrivateKey(privateKey).toString()) {
    throw new InvalidSignatureError('a card can only be sealed by the key of its peerId')
  }
  return sealPayload(CARD_DOMAIN, CARD_PAYLOAD_TYPE, canonicalEncode(checked), privateKey, maxSize)
}

/**
 * Verify a sealed card: size, signature, signer == `peerId`, version, schema, expiry.
 * Whether its `seq` is newer than the one already held is the holder's check.
 */
export async function openCard (bytes: Uint8Array, options: { now?: number, maxSize?: number } = {}): Promise<OpenedCard> {
  const { payload, signer } = await openPayload(bytes, CARD_DOMAIN, CARD_PAYLOAD_TYPE, options.maxSize ?? MAX_CARD_SIZE)
  const card = decodeVersioned(CardSchema, parseJson(payload), 'card')
  if (card.peerId !== signer) {
    throw new InvalidSignatureError(`card claims peer ${card.peerId} but is signed by ${signer}`)
  }
  if (card.expiresAt < (options.now ?? Date.now())) {
    throw new ExpiredError(`card of ${card.peerId} expired at ${new Date(card.expiresAt).toISOString()}`)
  }
  return { card, bytes }
}

/** The DHT key under which a peer's card is stored: `/pmcard/<peerId>`. */
export function cardDhtKey (peerId: string): Uint8Array {
  return new TextEncoder().encode(`/pmcard/${peerId}`)
}

/** The namespace kad-dht routes `/pmcard/…` keys to for validation and selection. */
export const CARD_DHT_NAMESPACE = 'pmcard'

/** The text hashed into a capability's DHT provider key (namespaced, so it collides with nothing else). */
export function capabilityProviderText (capability: string): string {
  return `persona-mesh/capability/v1/${capability.toLowerCase()}`
}
