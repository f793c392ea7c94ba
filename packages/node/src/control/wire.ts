import { NackError } from '@persona-mesh/protocol'
import * as errors from '../errors.js'
import type { NackReason } from '@persona-mesh/protocol'

/** Control socket file inside a persona's data directory. */
export const CONTROL_SOCKET = 'control.sock'
/** Longest line (one JSON-RPC message) accepted on the control socket. */
export const MAX_CONTROL_LINE = 4 * 1024 * 1024

export const JSONRPC_PARSE_ERROR = -32700
export const JSONRPC_INVALID_REQUEST = -32600
export const JSONRPC_METHOD_NOT_FOUND = -32601
export const JSONRPC_INVALID_PARAMS = -32602
/** An error raised by the mesh itself; `data.name` says which. */
export const JSONRPC_MESH_ERROR = -32000

export interface WireError {
  code: number
  message: string
  data?: { name: string, reason?: NackReason }
}

export function errorToWire (err: unknown): WireError {
  if (err instanceof errors.MeshError) {
    const data: WireError['data'] = { name: err.name }
    if (err instanceof NackError) data.reason = err.reason
    return { code: err.name === 'InvalidArgumentError' ? JSONRPC_INVALID_PARAMS : JSONRPC_MESH_ERROR, message: err.message, data }
  }
  return { code: JSONRPC_MESH_ERROR, message: (err as Error)?.message ?? String(err), data: { name: 'Error' } }
}

const byName: Record<string, new (message: string) => Error> = {
  TimeoutError: errors.TimeoutError,
  AbortError: errors.AbortError,
  PeerUnreachableError: errors.PeerUnreachableError,
  NotStartedError: errors.NotStartedError,
  InvalidNameError: errors.InvalidNameError,
  InvalidArgumentError: errors.InvalidArgumentError,
  IdentityError: errors.IdentityError,
  DuplicateHandlerError: errors.DuplicateHandlerError,
  MalformedMessageError: errors.MalformedMessageError,
  InvalidSignatureError: errors.InvalidSignatureError,
  ExpiredError: errors.ExpiredError,
  NoDaemonError: errors.NoDaemonError,
  AlreadyRunningError: errors.AlreadyRunningError,
  NotFoundError: errors.NotFoundError,
  ControlConnectionError: errors.ControlConnectionError
}

/** Rebuild the typed error the daemon raised, so callers branch on `name` the same way in both modes. */
export function errorFromWire (wire: WireError): Error {
  const name = wire.data?.name
  if (name === 'NackError' && wire.data?.reason !== undefined) {
    const err = new NackError(wire.data.reason)
    err.message = wire.message
    return err
  }
  const Ctor = name !== undefined ? byName[name] : undefined
  if (Ctor !== undefined) return new Ctor(wire.message)
  if (wire.code === JSONRPC_INVALID_PARAMS) return new errors.InvalidArgumentError(wire.message)
  // errors whose constructors take more than a message (TooLargeError, QueueFullError, …) keep their name
  const err = new errors.MeshError(wire.message)
  if (name !== undefined && name !== 'Error') err.name = name
  return err
}

/** Splits a byte stream into lines, refusing any line over the limit. */
export class LineSplitter {
  private buffered = ''

  constructor (private readonly maxLine: number) {}

  /** Returns the complete lines in `chunk`; throws when a line grows past the limit. */
  push (chunk: string): string[] {
    this.buffered += chunk
    const lines = this.buffered.split('\n')
    this.buffered = lines.pop() ?? ''
    if (this.buffered.length > this.maxLine) {
      throw new errors.MalformedMessageError(`control message longer than ${this.maxLine} bytes`)
    }
    return lines.filter(line => line.length > 0)
  }
}
