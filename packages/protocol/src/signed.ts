import { peerIdFromPublicKey } from '@libp2p/peer-id'
import { RecordEnvelope } from '@libp2p/peer-record'
import { equals as bytesEqual } from 'uint8arrays/equals'
import { InvalidSignatureError, MalformedMessageError, TooLargeError } from './errors.js'
import type { PrivateKey, Record } from '@libp2p/interface'

/** A signed payload as it came off the wire, with the PeerId that signed it. */
export interface OpenedPayload {
  payload: Uint8Array
  signer: string
}

/** Raw bytes wrapped as a libp2p `Record` so `RecordEnvelope` can seal them under our domain. */
class PayloadRecord implements Record {
  constructor (readonly domain: string, readonly codec: Uint8Array, private readonly bytes: Uint8Array) {}

  marshal (): Uint8Array {
    return this.bytes
  }

  equals (other: unknown): boolean {
    return other instanceof PayloadRecord && other.domain === this.domain && bytesEqual(other.bytes, this.bytes)
  }
}

/** Sign `payload` under `domain` (a signature is valid only in its domain) and marshal the envelope. */
export async function sealPayload (domain: string, payloadType: Uint8Array, payload: Uint8Array, privateKey: PrivateKey, maxSize: number): Promise<Uint8Array> {
  const sealed = await RecordEnvelope.seal(new PayloadRecord(domain, payloadType, payload), privateKey)
  const bytes = sealed.marshal()
  if (bytes.byteLength > maxSize) {
    throw new TooLargeError(bytes.byteLength, maxSize, 'sealed payload')
  }
  return bytes
}

/** Check size, envelope framing, payload type and signature; return the payload and its signer. */
export async function openPayload (data: Uint8Array, domain: string, payloadType: Uint8Array, maxSize: number): Promise<OpenedPayload> {
  if (data.byteLength > maxSize) {
    throw new TooLargeError(data.byteLength, maxSize, 'sealed payload')
  }
  let envelope: RecordEnvelope
  try {
    envelope = RecordEnvelope.createFromProtobuf(data)
  } catch (err) {
    throw new MalformedMessageError(`not a signed envelope: ${(err as Error).message}`)
  }
  // protobuf tolerates unknown fields, repeated fields and long varints: refuse every encoding but
  // the one we produce, so the bytes handed on are exactly the bytes that were signed
  if (!bytesEqual(envelope.marshal(), data)) {
    throw new MalformedMessageError('signed envelope is not in canonical form')
  }
  if (!bytesEqual(envelope.payloadType, payloadType)) {
    throw new MalformedMessageError('signed envelope carries an unexpected payload type')
  }
  let valid = false
  try {
    valid = await envelope.validate(domain)
  } catch {
    valid = false
  }
  if (!valid) {
    throw new InvalidSignatureError('signature does not verify')
  }
  return { payload: envelope.payload, signer: peerIdFromPublicKey(envelope.publicKey).toString() }
}
