import { MeshError } from '@persona-mesh/protocol'

export { QueueFullError, StorageFullError, StoreLockedError, StorageError } from '@persona-mesh/store'
export { MeshError, StaleRecordError, NackError, TooLargeError, MalformedMessageError, InvalidSignatureError, ExpiredError, UnsupportedVersionError } from '@persona-mesh/protocol'

/** A request got no answer before its deadline. */
export class TimeoutError extends MeshError {
  override name = 'TimeoutError'
}

/** The caller aborted the operation through its `AbortSignal`. */
export class AbortError extends MeshError {
  override name = 'AbortError'
}

/** The peer could not be reached, or the connection dropped before it answered. */
export class PeerUnreachableError extends MeshError {
  override name = 'PeerUnreachableError'
}

/** The node is not running (never started, or stopped). */
export class NotStartedError extends MeshError {
  override name = 'NotStartedError'
}

/** A persona name that cannot be used (it names a directory, so it is restricted). */
export class InvalidNameError extends MeshError {
  override name = 'InvalidNameError'
}

/** An argument given by the caller is not valid. */
export class InvalidArgumentError extends MeshError {
  override name = 'InvalidArgumentError'
}

/** The persona's identity key exists but cannot be read or used. */
export class IdentityError extends MeshError {
  override name = 'IdentityError'
}

/** A method name is already registered. */
export class DuplicateHandlerError extends MeshError {
  override name = 'DuplicateHandlerError'
}

/** No daemon is serving this persona's control socket. */
export class NoDaemonError extends MeshError {
  override name = 'NoDaemonError'
}

/** Another process already runs this persona. */
export class AlreadyRunningError extends MeshError {
  override name = 'AlreadyRunningError'
}

/** The control connection to the daemon broke. */
export class ControlConnectionError extends MeshError {
  override name = 'ControlConnectionError'
}

/** No such peer, card, message or task. */
export class NotFoundError extends MeshError {
  override name = 'NotFoundError'
}

/** A persona name matches more than one verified card. */
export class AmbiguousNameError extends MeshError {
  override name = 'AmbiguousNameError'
  constructor (readonly nameQuery: string, readonly candidates: Array<{ peerId: string, name: string }>) {
    super(`the name ${nameQuery} matches ${candidates.length} peers: ${candidates.map(c => c.peerId).join(', ')}; use a PeerId`)
  }
}

/** A task ended without a result: failed, rejected, canceled or expired. */
export class TaskFailedError extends MeshError {
  override name = 'TaskFailedError'
  constructor (readonly taskId: string, readonly status: string, readonly reason?: string, detail?: string) {
    super(`task ${taskId} ${status}${reason !== undefined ? ` (${reason})` : ''}${detail !== undefined ? `: ${detail}` : ''}`)
  }
}

/** A delegation would loop back to a peer already on the chain, or go deeper than `maxHops`. */
export class LoopDetectedError extends MeshError {
  override name = 'LoopDetectedError'
}
