/** Version of every Persona Mesh wire format (`v` in envelopes, cards and rpc frames). */
export const WIRE_VERSION = 1

/** Live request/response between two connected peers. */
export const RPC_PROTOCOL = '/persona-mesh/rpc/1.0.0'
/** Durable delivery of signed envelopes, sealed alone or in batches, from an outbox into an inbox. */
export const DELIVER_PROTOCOL = '/persona-mesh/deliver/1.1.0'
/**
 * The first version of delivery, for nodes that know no other: the same frames, but envelopes
 * sealed alone (RecordEnvelopes) only.
 */
export const DELIVER_PROTOCOL_1_0 = '/persona-mesh/deliver/1.0.0'
/** Every version of delivery a node speaks, newest first (the order a sender offers them in). */
export const DELIVER_PROTOCOLS = [DELIVER_PROTOCOL, DELIVER_PROTOCOL_1_0]
/** Fetch a peer's current signed capability card. */
export const CARD_PROTOCOL = '/persona-mesh/card/1.0.0'
/** The private Kademlia DHT that only Persona Mesh nodes join. */
export const KAD_PROTOCOL = '/persona-mesh/kad/1.0.0'

/** Gossipsub topic on which signed cards are announced. */
export const CARDS_TOPIC = 'persona-mesh/cards/1'
/** Prefix of the gossipsub topic that carries user broadcasts on a topic. */
export const USER_TOPIC_PREFIX = 'persona-mesh/t/'

/** RecordEnvelope domain for signed message envelopes; a signature is only valid inside it. */
export const ENVELOPE_DOMAIN = 'persona-mesh/envelope'
/** RecordEnvelope payload type for signed message envelopes. */
export const ENVELOPE_PAYLOAD_TYPE = new TextEncoder().encode('/persona-mesh/envelope/1')

/**
 * Largest encoded frame (rpc frame, sealed envelope or card) accepted from the wire.
 *
 * @default 262144 (256 KiB)
 */
export const MAX_FRAME_SIZE = 256 * 1024

/** Deepest JSON nesting accepted in a body; deeper documents are refused before parsing into objects. */
export const MAX_JSON_DEPTH = 64

/** Default lifetime of a durable message. */
export const DEFAULT_MESSAGE_TTL_MS = 7 * 24 * 60 * 60 * 1000

/** Longest method or tool name. */
export const MAX_METHOD_LENGTH = 128

/** Most peers a trace path may list (bounds `maxHops`). */
export const MAX_TRACE_PATH = 32
