import { join } from 'node:path'
import { createConnection } from 'node:net'
import { TypedEventEmitter } from 'main-event'
import { AbortError, ControlConnectionError, NoDaemonError, TimeoutError } from '../errors.js'
import { defaultHome, defaultName, personaDir } from '../identity.js'
import { CONTROL_SOCKET, errorFromWire, LineSplitter, MAX_CONTROL_LINE } from './wire.js'
import type { CardProfile } from '../cards/index.js'
import type { BroadcastResult, DelegateOptions, DelegateTarget, FindOptions, FindResult, Mesh, MeshAudit, MeshEvents, MeshInbox, MeshOutbox, MeshPolicy, MeshStatus, MeshTasks, MeshTools, SendOptions, SendResult, TaskInfo, TraceReport } from '../mesh.js'
import type { PeerInfo } from '../peers/peer-table.js'
import type { RequestOptions } from '../rpc/index.js'
import type { WireError } from './wire.js'
import type { Card, JsonValue } from '@persona-mesh/protocol'
import type { Socket } from 'node:net'

export interface ConnectMeshOptions {
  /** @default $PMESH_NAME or 'default' */
  name?: string
  /** @default $PMESH_HOME or ~/.persona-mesh */
  home?: string
  /** Connect to this socket instead of the persona's `control.sock`. */
  socketPath?: string
  /** How long to wait for the daemon to accept. @default 5000 */
  timeout?: number
  signal?: AbortSignal
}

export interface CallOptions {
  signal?: AbortSignal
  /** Give up after this long (the daemon is told to cancel). @default none: the daemon's own deadlines apply */
  timeout?: number
}

/** A `Mesh` served by a running daemon over its control socket. */
export interface RemoteMesh extends Mesh {
  readonly socketPath: string
  /** Call a control method by name (the typed methods wrap this). */
  call<T = unknown>(method: string, params?: object, options?: CallOptions): Promise<T>
  /** Resolves with the reason when the connection to the daemon ends (close() or the daemon went away). */
  readonly closed: Promise<Error>
  /** Disconnect from the daemon (the daemon keeps running). */
  close(): void
}

interface Waiter {
  resolve(value: unknown): void
  reject(err: Error): void
}

class ControlClient extends TypedEventEmitter<MeshEvents> implements RemoteMesh {
  private nextId = 0
  private readonly waiters = new Map<number, Waiter>()
  private closedError?: Error
  private readonly whenClosed = Promise.withResolvers<Error>()
  readonly closed = this.whenClosed.promise

  readonly inbox: MeshInbox = {
    read: async (options = {}) => this.call('inbox.read', options),
    get: async (id) => await this.call('inbox.get', { id }) ?? undefined,
    ack: async (ids) => this.call('inbox.ack', { ids }),
    unread: async () => this.call('inbox.unread'),
    wait: async (options = {}) => {
      const { signal, ...params } = options
      return this.call('inbox.wait', params, signal !== undefined ? { signal } : {})
    }
  }

  readonly tasks: MeshTasks = {
    list: async (query = {}) => this.call('tasks.list', query),
    get: async (id) => await this.call('tasks.get', { id }) ?? undefined,
    wait: async (id, options = {}) => {
      const { signal, ...params } = options
      return this.call('tasks.wait', { id, ...params }, signal !== undefined ? { signal } : {})
    },
    cancel: async (id) => this.call('tasks.cancel', { id }),
    update: async (id, update) => this.call('tasks.update', { id, ...update })
  }

  readonly tools: MeshTools = {
    list: async (peer) => this.call('tools.list', peer === undefined ? {} : { peer }),
    call: async (peer, name, args, options = {}) => {
      const { signal, ...params } = options
      return this.call('tools.call', { peer, name, args, ...params }, signal !== undefined ? { signal } : {})
    }
  }

  readonly audit: MeshAudit = {
    query: async (query = {}) => {
      const { signal, ...params } = query
      return this.call('audit.query', params, signal !== undefined ? { signal } : {})
    }
  }

  readonly policy: MeshPolicy = {
    get: async () => this.call('policy.get'),
    allow: async (peer) => this.call('policy.allow', { peer }),
    deny: async (peer) => this.call('policy.deny', { peer }),
    mode: async (mode) => this.call('policy.mode', { mode })
  }

  readonly outbox: MeshOutbox = {
    get: async (id) => await this.call('outbox.get', { id }) ?? undefined,
    list: async (query = {}) => this.call('outbox.list', query)
  }

  /** Known once the daemon answered `status` (see `connectMesh`). */
  peerId = ''
  name = ''

  constructor (readonly socketPath: string, private readonly socket: Socket) {
    super()
    this.listen()
  }

  private listen (): void {
    const splitter = new LineSplitter(MAX_CONTROL_LINE)
    this.socket.setEncoding('utf8')
    this.socket.on('data', (chunk: string) => {
      let lines: string[]
      try {
        lines = splitter.push(chunk)
      } catch (err) {
        this.shutdown(new ControlConnectionError((err as Error).message))
        return
      }
      for (const line of lines) this.receive(line)
    })
    this.socket.on('error', (err) => { this.shutdown(new ControlConnectionError(`control connection failed: ${err.message}`)) })
    this.socket.on('close', () => { this.shutdown(new ControlConnectionError('the daemon closed the control connection (did it stop?)')) })
  }

  private receive (line: string): void {
    let message: { id?: unknown, result?: unknown, error?: WireError, method?: unknown, params?: { type?: string, detail?: unknown } }
    try {
      message = JSON.parse(line)
    } catch {
      return
    }
    if (message.method === 'event' && message.params?.type !== undefined) {
      this.dispatchEvent(new CustomEvent(message.params.type, { detail: message.params.detail }))
      return
    }
    if (typeof message.id !== 'number') return
    const waiter = this.waiters.get(message.id)
    if (waiter === undefined) return
    this.waiters.delete(message.id)
    if (message.error !== undefined) waiter.reject(errorFromWire(message.error))
    else waiter.resolve(message.result)
  }

  private shutdown (err: Error): void {
    if (this.closedError !== undefined) return
    this.closedError = err
    this.whenClosed.resolve(err)
    const waiters = [...this.waiters.values()]
    this.waiters.clear()
    for (const waiter of waiters) waiter.reject(err)
    this.socket.destroy()
  }

  async call<T = unknown> (method: string, params: object = {}, options: CallOptions = {}): Promise<T> {
    if (this.closedError !== undefined) throw this.closedError
    const id = ++this.nextId
    const { promise, resolve, reject } = Promise.withResolvers<unknown>()
    this.waiters.set(id, { resolve, reject })
    const signals: AbortSignal[] = []
    if (options.signal !== undefined) signals.push(options.signal)
    if (options.timeout !== undefined) signals.push(AbortSignal.timeout(options.timeout))
    const signal = signals.length > 0 ? AbortSignal.any(signals) : undefined
    const onAbort = (): void => {
      if (!this.waiters.delete(id)) return
      this.socket.write(`${JSON.stringify({ jsonrpc: '2.0', method: '$/cancel', params: { id } })}\n`)
      reject(options.signal?.aborted === true ? new AbortError(`${method} aborted`) : new TimeoutError(`${method} did not finish within ${options.timeout} ms`))
    }
    signal?.addEventListener('abort', onAbort, { once: true })
    try {
      if (signal?.aborted === true) onAbort()
      else this.socket.write(`${JSON.stringify({ jsonrpc: '2.0', id, method, params })}\n`)
      return await promise as T
    } finally {
      signal?.removeEventListener('abort', onAbort)
    }
  }

  async status (): Promise<MeshStatus> {
    return this.call<MeshStatus>('status')
  }

  async dial (multiaddr: string, options: { signal?: AbortSignal } = {}): Promise<void> {
    await this.call('dial', { multiaddr }, options)
  }

  async request (peer: string, method: string, body: JsonValue, options: RequestOptions = {}): Promise<JsonValue> {
    const params: Record<string, unknown> = { peer, method, body }
    if (options.timeout !== undefined) params.timeout = options.timeout
    return this.call<JsonValue>('request', params, options.signal !== undefined ? { signal: options.signal } : {})
  }

  async peers (options: { onlineOnly?: boolean, signal?: AbortSignal } = {}): Promise<PeerInfo[]> {
    return this.call<PeerInfo[]>('peers', { onlineOnly: options.onlineOnly ?? false }, signalOnly(options))
  }

  async card (peer?: string, options: { signal?: AbortSignal } = {}): Promise<Card> {
    return this.call<Card>('card', peer === undefined ? {} : { peer }, signalOnly(options))
  }

  async cards (): Promise<Card[]> {
    return this.call<Card[]>('cards')
  }

  async find (query: string, options: FindOptions = {}): Promise<FindResult[]> {
    const params: Record<string, unknown> = { query }
    if (options.limit !== undefined) params.limit = options.limit
    if (options.dht !== undefined) params.dht = options.dht
    return this.call<FindResult[]>('find', params, signalOnly(options))
  }

  async resolve (nameOrId: string): Promise<string> {
    return this.call<string>('resolve', { nameOrId })
  }

  async updateCard (profile: CardProfile): Promise<Card> {
    return this.call<Card>('updateCard', profile)
  }

  async send (to: string, body: JsonValue, options: SendOptions = {}): Promise<SendResult> {
    const { signal, ...rest } = options
    return this.call<SendResult>('send', { to, body, ...rest }, signal !== undefined ? { signal } : {})
  }

  async subscribe (topic: string): Promise<string[]> {
    return this.call<string[]>('subscribe', { topic })
  }

  async unsubscribe (topic: string): Promise<string[]> {
    return this.call<string[]>('unsubscribe', { topic })
  }

  async topics (): Promise<string[]> {
    return this.call<string[]>('topics')
  }

  async broadcast (topic: string, body: JsonValue, options: { ttl?: number, thread?: string } = {}): Promise<BroadcastResult> {
    return this.call<BroadcastResult>('broadcast', { topic, body, ...options })
  }

  async delegate (target: DelegateTarget, input: JsonValue, options: DelegateOptions = {}): Promise<TaskInfo> {
    const { signal, capability, ...rest } = options
    const params: Record<string, unknown> = { input, ...rest }
    if (typeof target === 'string') {
      params.peer = target
      if (capability !== undefined) params.capability = capability
    } else {
      params.capability = target.capability
      if (target.peer !== undefined) params.peer = target.peer
    }
    return this.call<TaskInfo>('delegate', params, signal !== undefined ? { signal } : {})
  }

  async trace (id: string): Promise<TraceReport> {
    return this.call<TraceReport>('trace', { id })
  }

  close (): void {
    this.shutdown(new ControlConnectionError('control connection closed'))
  }
}

function signalOnly (options: { signal?: AbortSignal }): CallOptions {
  return options.signal !== undefined ? { signal: options.signal } : {}
}

/** Path of a persona's control socket. */
export function controlSocketPath (name: string, home: string): string {
  return join(personaDir(home, name), CONTROL_SOCKET)
}

/**
 * Attach to the running daemon of a persona. Throws `NoDaemonError` (with the command that
 * starts one) when nothing is listening.
 */
export async function connectMesh (options: ConnectMeshOptions = {}): Promise<RemoteMesh> {
  const name = options.name ?? defaultName()
  const home = options.home ?? defaultHome()
  const path = options.socketPath ?? controlSocketPath(name, home)
  const socket = createConnection(path)
  const timeout = options.timeout ?? 5000
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => { socket.destroy(); reject(new TimeoutError(`daemon of persona ${name} did not accept within ${timeout} ms`)) }, timeout)
    const onAbort = (): void => { socket.destroy(); reject(new AbortError('connect aborted')) }
    options.signal?.addEventListener('abort', onAbort, { once: true })
    socket.once('connect', () => { clearTimeout(timer); options.signal?.removeEventListener('abort', onAbort); resolve() })
    socket.once('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer)
      options.signal?.removeEventListener('abort', onAbort)
      if (err.code === 'ENOENT' || err.code === 'ECONNREFUSED') {
        reject(new NoDaemonError(`no node running for persona ${name}; start one with: pmesh start --name ${name}`))
      } else {
        reject(new ControlConnectionError(`cannot connect to ${path}: ${err.message}`))
      }
    })
  })
  const client = new ControlClient(path, socket)
  try {
    const status = await client.call<MeshStatus>('status', {}, { timeout })
    client.peerId = status.peerId
    client.name = status.name
    await client.call('events.subscribe', {}, { timeout })
  } catch (err) {
    client.close()
    throw err
  }
  return client
}
