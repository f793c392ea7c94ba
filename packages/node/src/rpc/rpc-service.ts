import { logger } from '@libp2p/logger'
import {
  decodeRpcFrame,
  encodeRpcFrame,
  MAX_FRAME_SIZE,
  MAX_RPC_TIMEOUT_MS,
  MAX_METHOD_LENGTH,
  NackError,
  nackFrame,
  RPC_PROTOCOL,
  salvageRequestId,
  TooLargeError,
  UnsupportedVersionError,
  WIRE_VERSION
} from '@persona-mesh/protocol'
import { AbortError, DuplicateHandlerError, InvalidArgumentError, NotStartedError, PeerUnreachableError, TimeoutError } from '../errors.js'
import { FrameChannel } from '../framing.js'
import {
  DEFAULT_HANDLER_TIMEOUT_MS,
  DEFAULT_MAX_CONCURRENT_PER_PEER,
  DEFAULT_REQUEST_TIMEOUT_MS,
  DEFAULT_STREAMS_PER_PEER,
  MAX_INBOUND_STREAMS,
  MAX_OUTBOUND_STREAMS,
  PIPELINE_DEPTH
} from './constants.js'
import type { HandleOptions, RequestOptions, RpcContext, RpcHandler } from './index.js'
import type { Connection, Libp2p, PeerId, Stream } from '@libp2p/interface'
import type { Multiaddr } from '@multiformats/multiaddr'
import type { JsonValue, NackReason, RpcFrame, RpcRequestFrame } from '@persona-mesh/protocol'

const log = logger('persona-mesh:rpc')
const encoder = new TextEncoder()

export interface RpcServiceInit {
  /** @default MAX_FRAME_SIZE (256 KiB) */
  maxFrameSize?: number
  /** @default 30000 */
  defaultTimeout?: number
  /** @default 4 */
  streamsPerPeer?: number
  /** Checked before any handler runs (policy, rate limits); a refusal becomes a NACK. */
  gate?: (from: string, method: string) => { ok: true } | { ok: false, reason: NackReason, message: string }
}

export type RpcComponents = Pick<Libp2p, 'handle' | 'unhandle' | 'dialProtocol'>

interface Registration {
  handler: RpcHandler
  timeout: number
  maxConcurrent: number
}

interface Pending {
  resolve(body: JsonValue): void
  reject(err: Error): void
}

/** One outbound stream shared by many requests, answers matched by id. */
class ClientStream {
  readonly pending = new Map<number, Pending>()
  private nextId = 0
  readonly channel: FrameChannel

  constructor (stream: Stream, maxFrameSize: number, private readonly onGone: (self: ClientStream) => void) {
    this.channel = new FrameChannel(stream, {
      maxFrameSize,
      onFrame: (bytes) => { this.receive(bytes) },
      onFramingError: (err) => {
        log.error('peer broke rpc framing: %e', err)
        this.fail(new PeerUnreachableError(`rpc stream broken: ${err.message}`))
        this.channel.abort(err)
      },
      onClose: (err) => {
        this.fail(new PeerUnreachableError(err === undefined ? 'connection closed before the peer answered' : `connection lost before the peer answered: ${err.message}`))
      }
    })
  }

  allocateId (): number {
    do {
      this.nextId = (this.nextId + 1) >>> 0
    } while (this.pending.has(this.nextId))
    return this.nextId
  }

  private receive (bytes: Uint8Array): void {
    let frame: RpcFrame
    try {
      frame = decodeRpcFrame(bytes)
    } catch (err) {
      log.error('undecodable rpc answer: %e', err)
      return
    }
    if (frame.t === 'res') {
      const waiter = this.pending.get(frame.id)
      this.pending.delete(frame.id)
      waiter?.resolve(frame.body)
    } else if (frame.t === 'nack') {
      if (frame.id === null) {
        // the peer could not tie our frame to a request: everything on this stream is in doubt
        this.fail(new NackError(frame.reason, frame.message))
        return
      }
      const waiter = this.pending.get(frame.id)
      this.pending.delete(frame.id)
      waiter?.reject(new NackError(frame.reason, frame.message))
    }
  }

  fail (err: Error): void {
    const waiters = [...this.pending.values()]
    this.pending.clear()
    this.onGone(this)
    for (const waiter of waiters) waiter.reject(err)
  }
}

/** A request being answered. */
class InboundCall {
  timer?: NodeJS.Timeout
  private done = false
  private controller?: AbortController

  constructor (private readonly onDone: () => void) {}

  /** The handler's signal, made on first use. */
  get signal (): AbortSignal {
    this.controller ??= new AbortController()
    return this.controller.signal
  }

  /**
   * Finish once (later calls do nothing): stop the deadline, abort the handler's signal when
   * given a reason, send the answer if any, and only then free the slot (which may close the
   * stream of a caller that is done).
   */
  finish (answer?: () => void, abortReason?: Error): void {
    if (this.done) return
    this.done = true
    clearTimeout(this.timer)
    if (abortReason !== undefined) this.controller?.abort(abortReason)
    answer?.()
    this.onDone()
  }
}

function isPromiseLike<T> (value: T | Promise<T>): value is Promise<T> {
  return typeof (value as { then?: unknown } | null)?.then === 'function'
}

/**
 * `/persona-mesh/rpc/1.0.0`: live request/response. Requests to a peer share a small pool of
 * long-lived streams (pipelined, matched by id), which saves a protocol negotiation per call.
 */
export class RpcService {
  private readonly handlers = new Map<string, Registration>()
  private readonly outbound = new Map<string, ClientStream[]>()
  private readonly opening = new Map<string, Promise<ClientStream>>()
  private readonly inbound = new Map<FrameChannel, Map<number, InboundCall>>()
  /** `${peer}\n${method}` → requests running now */
  private readonly running = new Map<string, number>()
  private readonly maxFrameSize: number
  private readonly defaultTimeout: number
  private readonly streamsPerPeer: number
  private readonly gate: RpcServiceInit['gate']
  private stopController = new AbortController()
  private started = false

  constructor (private readonly components: RpcComponents, init: RpcServiceInit = {}) {
    this.maxFrameSize = init.maxFrameSize ?? MAX_FRAME_SIZE
    this.defaultTimeout = init.defaultTimeout ?? DEFAULT_REQUEST_TIMEOUT_MS
    this.streamsPerPeer = init.streamsPerPeer ?? DEFAULT_STREAMS_PER_PEER
    this.gate = init.gate
    if (!(this.streamsPerPeer >= 1)) throw new InvalidArgumentError('streamsPerPeer must be at least 1')
  }

  async start (): Promise<void> {
    if (this.started) return
    this.stopController = new AbortController()
    await this.components.handle(RPC_PROTOCOL, (stream, connection) => { this.onInboundStream(stream, connection) }, {
      maxInboundStreams: MAX_INBOUND_STREAMS,
      maxOutboundStreams: MAX_OUTBOUND_STREAMS
    })
    this.started = true
  }

  async stop (): Promise<void> {
    if (!this.started) return
    this.started = false
    this.stopController.abort(new NotStartedError('node stopped'))
    // running handlers: abort their signals; nobody will be answered
    for (const calls of this.inbound.values()) {
      for (const call of [...calls.values()]) call.finish(undefined, new NotStartedError('node stopped'))
    }
    await this.components.unhandle(RPC_PROTOCOL).catch(() => {})
    const streams = [...this.outbound.values()].flat()
    this.outbound.clear()
    for (const s of streams) {
      s.fail(new NotStartedError('node stopped before the peer answered'))
    }
    await Promise.all([
      ...streams.map(async s => { await s.channel.close() }),
      ...[...this.inbound.keys()].map(async c => { await c.close() })
    ])
    this.inbound.clear()
  }

  handle (method: string, handler: RpcHandler, options: HandleOptions = {}): void {
    validateMethod(method)
    if (this.handlers.has(method)) {
      throw new DuplicateHandlerError(`a handler for ${JSON.stringify(method)} is already registered`)
    }
    const timeout = options.timeout ?? DEFAULT_HANDLER_TIMEOUT_MS
    const maxConcurrent = options.maxConcurrent ?? DEFAULT_MAX_CONCURRENT_PER_PEER
    if (!(timeout > 0) || !(maxConcurrent >= 1)) {
      throw new InvalidArgumentError('timeout must be > 0 and maxConcurrent >= 1')
    }
    this.handlers.set(method, { handler, timeout, maxConcurrent })
  }

  unhandle (method: string): void {
    this.handlers.delete(method)
  }

  /** Send a request and wait for its answer. Throws `NackError`, `TimeoutError`, `PeerUnreachableError`, `AbortError`, `TooLargeError`. */
  async request (peer: PeerId | Multiaddr, method: string, body: JsonValue, options: RequestOptions = {}): Promise<JsonValue> {
    if (!this.started) throw new NotStartedError('node is not started')
    validateMethod(method)
    const timeout = options.timeout ?? this.defaultTimeout
    if (!(timeout > 0 && timeout <= MAX_RPC_TIMEOUT_MS)) {
      throw new InvalidArgumentError(`timeout must be between 1 and ${MAX_RPC_TIMEOUT_MS} ms`)
    }
    // serialise the body once; the frame is assembled around it once the id is known. An
    // oversized request still fails here, before any network work (sized with the longest id)
    const bodyJson = JSON.stringify(body ?? null)
    const head = `{"v":${WIRE_VERSION},"t":"req","method":${JSON.stringify(method)},"timeout":${Math.max(1, timeout)},"id":`
    const size = Buffer.byteLength(head) + 10 + ',"body":'.length + Buffer.byteLength(bodyJson) + 1
    if (size > this.maxFrameSize) throw new TooLargeError(size, this.maxFrameSize, 'request')
    if (options.signal?.aborted === true) throw new AbortError('request aborted')

    const startedAt = Date.now()
    // fast path: an open stream with room; no signal, no await
    let client = this.pickStream(peer)
    if (client === undefined) {
      // slow path (first request to a peer, pool growing): a signal bounds the dial
      const deadline = AbortSignal.timeout(timeout)
      const signals = [deadline, this.stopController.signal]
      if (options.signal !== undefined) signals.push(options.signal)
      try {
        client = await this.streamFor(peer, AbortSignal.any(signals))
      } catch (err) {
        throw this.abortReason(err as Error, deadline, options.signal, timeout, method)
      }
    }
    const remaining = timeout - (Date.now() - startedAt)
    if (remaining <= 0) throw new TimeoutError(`no answer to ${method} within ${timeout} ms`)
    const stream = client
    const id = stream.allocateId()
    const frame = encoder.encode(`${head}${id},"body":${bodyJson}}`)
    return await new Promise<JsonValue>((resolve, reject) => {
      const settle = (): void => {
        clearTimeout(timer)
        options.signal?.removeEventListener('abort', onAbort)
      }
      const cancel = (err: Error): void => {
        if (!stream.pending.delete(id)) return
        settle()
        reject(err)
        if (stream.channel.open) {
          stream.channel.send(encodeRpcFrame({ v: WIRE_VERSION, t: 'cancel', id })).catch(() => {})
        }
      }
      const onAbort = (): void => { cancel(new AbortError('request aborted')) }
      // one plain timer, cleared on the answer (an AbortSignal.timeout lives on until it fires)
      const timer = setTimeout(() => { cancel(new TimeoutError(`no answer to ${method} within ${timeout} ms`)) }, remaining)
      timer.unref()
      options.signal?.addEventListener('abort', onAbort, { once: true })
      // a node stop or a lost stream rejects through ClientStream.fail()
      stream.pending.set(id, {
        resolve: (value) => { settle(); resolve(value) },
        reject: (err) => { settle(); reject(err) }
      })
      stream.channel.send(frame).catch((err: Error) => {
        if (stream.pending.delete(id)) {
          settle()
          reject(new PeerUnreachableError(`could not send request: ${err.message}`))
        }
      })
    })
  }

  private abortReason (err: Error | undefined, deadline: AbortSignal, caller: AbortSignal | undefined, timeout: number, method: string): Error {
    if (caller?.aborted === true) return new AbortError('request aborted')
    if (deadline.aborted) return new TimeoutError(`no answer to ${method} within ${timeout} ms`)
    if (this.stopController.signal.aborted) return new NotStartedError('node stopped before the peer answered')
    if (err === undefined) return new AbortError('request aborted')
    if (err.name === 'MeshError' || err instanceof PeerUnreachableError) return err
    return new PeerUnreachableError(`cannot reach peer: ${err.message}`)
  }

  /** The open stream with the fewest requests in flight. */
  private leastBusy (peer: PeerId | Multiaddr): { best?: ClientStream, poolSize: number } {
    const pool = this.outbound.get(peer.toString()) ?? []
    let best: ClientStream | undefined
    for (const s of pool) {
      if (s.channel.open && (best === undefined || s.pending.size < best.pending.size)) best = s
    }
    return best !== undefined ? { best, poolSize: pool.length } : { poolSize: pool.length }
  }

  /** An open stream with room, without waiting; undefined when one should be opened. */
  private pickStream (peer: PeerId | Multiaddr): ClientStream | undefined {
    const { best, poolSize } = this.leastBusy(peer)
    return best !== undefined && (best.pending.size < PIPELINE_DEPTH || poolSize >= this.streamsPerPeer) ? best : undefined
  }

  private async streamFor (peer: PeerId | Multiaddr, signal: AbortSignal): Promise<ClientStream> {
    const key = peer.toString()
    const ready = this.pickStream(peer)
    if (ready !== undefined) return ready
    const { best } = this.leastBusy(peer)
    const opening = this.opening.get(key)
    if (opening !== undefined) {
      // someone is already opening one: share it (or fall back to the best we have)
      return best ?? await opening
    }
    const promise = this.openStream(key, peer, signal)
    this.opening.set(key, promise)
    try {
      return await promise
    } finally {
      this.opening.delete(key)
    }
  }

  private async openStream (key: string, peer: PeerId | Multiaddr, signal: AbortSignal): Promise<ClientStream> {
    const stream = await this.components.dialProtocol(peer, RPC_PROTOCOL, { signal })
    const client = new ClientStream(stream, this.maxFrameSize, (gone) => {
      const list = this.outbound.get(key)
      if (list === undefined) return
      const rest = list.filter(s => s !== gone)
      if (rest.length === 0) this.outbound.delete(key)
      else this.outbound.set(key, rest)
    })
    const list = this.outbound.get(key) ?? []
    list.push(client)
    this.outbound.set(key, list)
    return client
  }

  private onInboundStream (stream: Stream, connection: Connection): void {
    const from = connection.remotePeer.toString()
    const running = new Map<number, InboundCall>()
    // a caller that finished writing gets its stream closed once its answers are out, so
    // half-open streams do not pile up against the per-connection stream limit
    let callerDone = false
    const closeIfDone = (): void => {
      if (callerDone && running.size === 0) void channel.close()
    }
    stream.addEventListener('remoteCloseWrite', () => { callerDone = true; closeIfDone() })
    const channel: FrameChannel = new FrameChannel(stream, {
      maxFrameSize: this.maxFrameSize,
      onFrame: (bytes) => { this.onRequestFrame(channel, from, running, bytes, closeIfDone) },
      onFramingError: (err) => {
        log('peer %s broke rpc framing: %s', from, err.message)
        const reason: NackReason = err.name === 'InvalidMessageLengthError' || err.name === 'InvalidParametersError' ? 'too_large' : 'invalid_request'
        this.reply(channel, nackFrame(null, reason, `frame refused: larger than ${this.maxFrameSize} bytes or badly framed`))
        void channel.close()
      },
      onClose: () => {
        this.inbound.delete(channel)
        for (const call of [...running.values()]) call.finish(undefined, new AbortError('caller went away'))
        running.clear()
      }
    })
    this.inbound.set(channel, running)
  }

  private onRequestFrame (channel: FrameChannel, from: string, running: Map<number, InboundCall>, bytes: Uint8Array, onSettled: () => void): void {
    let frame: RpcFrame
    try {
      frame = decodeRpcFrame(bytes)
    } catch (err) {
      const reason: NackReason = err instanceof UnsupportedVersionError ? 'unsupported_version' : 'invalid_request'
      log('bad rpc frame from %s: %s', from, (err as Error).message)
      this.reply(channel, nackFrame(salvageRequestId(bytes), reason, (err as Error).message))
      return
    }
    if (frame.t === 'cancel') {
      running.get(frame.id)?.finish(undefined, new AbortError('caller cancelled'))
      return
    }
    if (frame.t !== 'req') {
      this.reply(channel, nackFrame(frame.id, 'invalid_request', `unexpected ${frame.t} frame`))
      return
    }
    if (running.has(frame.id)) {
      this.reply(channel, nackFrame(frame.id, 'invalid_request', 'request id already in use on this stream'))
      return
    }
    const verdict = this.gate?.(from, frame.method)
    if (verdict !== undefined && !verdict.ok) {
      this.reply(channel, nackFrame(frame.id, verdict.reason, verdict.message))
      return
    }
    const registration = this.handlers.get(frame.method)
    if (registration === undefined) {
      this.reply(channel, nackFrame(frame.id, 'incapable', `no handler for ${frame.method}`))
      return
    }
    const slot = `${from}\n${frame.method}`
    const busy = this.running.get(slot) ?? 0
    if (busy >= registration.maxConcurrent) {
      this.reply(channel, nackFrame(frame.id, 'overloaded', `more than ${registration.maxConcurrent} concurrent ${frame.method} requests`))
      return
    }
    this.running.set(slot, busy + 1)
    const id = frame.id
    const call = new InboundCall(() => {
      running.delete(id)
      const left = (this.running.get(slot) ?? 1) - 1
      if (left <= 0) this.running.delete(slot)
      else this.running.set(slot, left)
      onSettled()
    })
    running.set(id, call)
    this.run(channel, from, frame, registration, call)
  }

  /**
   * Run the handler. One that answers synchronously costs no timer and no signal; an async one
   * gets one timer for its deadline. `context.signal` is made only if the handler reads it.
   */
  private run (channel: FrameChannel, from: string, frame: RpcRequestFrame, registration: Registration, call: InboundCall): void {
    const timeout = Math.min(registration.timeout, frame.timeout)
    const context: RpcContext = { from, method: frame.method, get signal () { return call.signal } }
    let result: JsonValue | Promise<JsonValue>
    try {
      result = registration.handler(frame.body, context)
    } catch (err) {
      call.finish(() => { this.answerError(channel, frame, err) })
      return
    }
    if (!isPromiseLike(result)) {
      const body = result
      call.finish(() => { this.answer(channel, frame, body) })
      return
    }
    call.timer = setTimeout(() => {
      call.finish(() => {
        this.reply(channel, nackFrame(frame.id, 'timeout', `handler did not answer within ${timeout} ms`))
      }, new TimeoutError(`handler did not answer within ${timeout} ms`))
    }, timeout)
    // finish() does nothing once the call was cancelled, timed out or its caller left
    Promise.resolve(result).then(
      (body) => { call.finish(() => { this.answer(channel, frame, body) }) },
      (err) => { call.finish(() => { this.answerError(channel, frame, err) }) }
    )
  }

  private answer (channel: FrameChannel, frame: RpcRequestFrame, body: JsonValue | undefined): void {
    let response: Uint8Array
    try {
      response = encodeRpcFrame({ v: WIRE_VERSION, t: 'res', id: frame.id, body: body ?? null })
    } catch (err) {
      this.answerError(channel, frame, err)
      return
    }
    if (response.byteLength > this.maxFrameSize) {
      this.reply(channel, nackFrame(frame.id, 'too_large', `response of ${response.byteLength} bytes exceeds ${this.maxFrameSize}`))
      return
    }
    this.replyBytes(channel, response)
  }

  private answerError (channel: FrameChannel, frame: RpcRequestFrame, err: unknown): void {
    if (err instanceof NackError) {
      this.reply(channel, nackFrame(frame.id, err.reason, err.detail))
    } else {
      log.error('handler for %s failed: %e', frame.method, err)
      this.reply(channel, nackFrame(frame.id, 'internal_error', 'the handler failed'))
    }
  }

  private reply (channel: FrameChannel, frame: RpcFrame): void {
    this.replyBytes(channel, encodeRpcFrame(frame))
  }

  private replyBytes (channel: FrameChannel, bytes: Uint8Array): void {
    if (!channel.open) return
    channel.send(bytes).catch((err: Error) => { log('could not answer: %s', err.message) })
  }
}

function validateMethod (method: string): void {
  if (typeof method !== 'string' || method.length === 0 || method.length > MAX_METHOD_LENGTH) {
    throw new InvalidArgumentError(`method must be 1-${MAX_METHOD_LENGTH} characters`)
  }
}
