import type { NackReason } from './nack.js'

/**
 * Base class of every error Persona Mesh throws on purpose. Branch on `err.name`, never on the text.
 */
export class MeshError extends Error {
  override name = 'MeshError'
}

/** A signature does not verify, or the signer is not who the payload claims. */
export class InvalidSignatureError extends MeshError {
  override name = 'InvalidSignatureError'
}

/** A message or card is past its `expiresAt`. */
export class ExpiredError extends MeshError {
  override name = 'ExpiredError'
}

/** An encoded frame, envelope or card is larger than the limit. */
export class TooLargeError extends MeshError {
  override name = 'TooLargeError'
  constructor (readonly size: number, readonly limit: number, what = 'frame') {
    super(`${what} of ${size} bytes exceeds the limit of ${limit} bytes`)
  }
}

/** A frame carries a wire version (`v`) this node does not speak. */
export class UnsupportedVersionError extends MeshError {
  override name = 'UnsupportedVersionError'
  constructor (readonly version: unknown, what = 'frame') {
    super(`${what} has unsupported version ${JSON.stringify(version) ?? String(version)}`)
  }
}

/** Bytes that do not decode to a valid frame: bad JSON, wrong types, missing fields, too deep. */
export class MalformedMessageError extends MeshError {
  override name = 'MalformedMessageError'
}

/** A replayed or rolled-back record: its sequence number is not newer than the one already held. */
export class StaleRecordError extends MeshError {
  override name = 'StaleRecordError'
}

/** The remote peer refused a request and said why. */
export class NackError extends MeshError {
  override name = 'NackError'
  /** The peer's explanation, if it gave one. */
  readonly detail?: string
  constructor (readonly reason: NackReason, detail?: string) {
    super(detail === undefined || detail === '' ? `peer refused: ${reason}` : `peer refused: ${reason}: ${detail}`)
    if (detail !== undefined && detail !== '') this.detail = detail
  }
}
