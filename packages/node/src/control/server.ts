import { chmod, unlink } from 'node:fs/promises'
import { createConnection, createServer } from 'node:net'
import { logger } from '@libp2p/logger'
import { AlreadyRunningError, InvalidArgumentError } from '../errors.js'
import { controlMethods } from './methods.js'
import {
  errorToWire,
  JSONRPC_INVALID_PARAMS,
  JSONRPC_INVALID_REQUEST,
  JSONRPC_METHOD_NOT_FOUND,
  JSONRPC_PARSE_ERROR,
  LineSplitter,
  MAX_CONTROL_LINE
} from './wire.js'
import type { Mesh, MeshEvents } from '../mesh.js'
import type { WireError } from './wire.js'
import type { Server, Socket } from 'node:net'

const log = logger('persona-mesh:control')

/** Events forwarded to control clients that subscribed with `events.subscribe`. */
const FORWARDED_EVENTS: Array<keyof MeshEvents> = [
  'peer:connect', 'peer:disconnect', 'peer:card', 'peer:online', 'peer:offline',
  'message:delivered', 'message:failed', 'message:expired', 'message:received', 'task:update'
]

export interface ControlServer {
  readonly path: string
  close(): Promise<void>
}

/**
 * Serve `mesh` on a Unix socket (mode 0600) as newline-delimited JSON-RPC 2.0. Besides the
 * `Mesh` methods: `events.subscribe` turns on event notifications (`method: "event"`) for that
 * connection, and the notification `$/cancel {id}` aborts a running call.
 */
export async function serveControl (mesh: Mesh, path: string): Promise<ControlServer> {
  await clearStaleSocket(path)
  const sockets = new Set<Socket>()
  const server = createServer((socket) => {
    sockets.add(socket)
    socket.on('close', () => sockets.delete(socket))
    handleConnection(mesh, socket)
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(path, () => { server.off('error', reject); resolve() })
  })
  await chmod(path, 0o600)
  server.on('error', (err) => { log.error('control socket error: %e', err) })
  return {
    path,
    close: async () => {
      for (const socket of sockets) socket.destroy()
      await closeServer(server)
      await unlink(path).catch(() => {})
    }
  }
}

async function closeServer (server: Server): Promise<void> {
  await new Promise<void>((resolve) => { server.close(() => { resolve() }) })
}

/** A socket file left by a crashed daemon is removed; a live one means the persona already runs. */
async function clearStaleSocket (path: string): Promise<void> {
  const alive = await new Promise<boolean>((resolve) => {
    const probe = createConnection(path)
    probe.once('connect', () => { probe.destroy(); resolve(true) })
    probe.once('error', () => { resolve(false) })
  })
  if (alive) {
    throw new AlreadyRunningError(`a node is already serving ${path}`)
  }
  await unlink(path).catch(() => {})
}

function handleConnection (mesh: Mesh, socket: Socket): void {
  socket.setEncoding('utf8')
  const splitter = new LineSplitter(MAX_CONTROL_LINE)
  const running = new Map<string | number, AbortController>()
  const unsubscribe: Array<() => void> = []

  const send = (message: object): void => {
    if (!socket.writable) return
    socket.write(`${JSON.stringify(message)}\n`)
  }
  const fail = (id: string | number | null, error: WireError): void => { send({ jsonrpc: '2.0', id, error }) }

  socket.on('data', (chunk: string) => {
    let lines: string[]
    try {
      lines = splitter.push(chunk)
    } catch (err) {
      fail(null, { code: JSONRPC_INVALID_REQUEST, message: (err as Error).message })
      socket.end()
      return
    }
    for (const line of lines) {
      dispatch(line)
    }
  })
  socket.on('error', () => {})
  socket.on('close', () => {
    for (const controller of running.values()) controller.abort()
    running.clear()
    for (const off of unsubscribe) off()
  })

  function dispatch (line: string): void {
    let message: { jsonrpc?: unknown, id?: unknown, method?: unknown, params?: unknown }
    try {
      message = JSON.parse(line)
    } catch {
      fail(null, { code: JSONRPC_PARSE_ERROR, message: 'invalid JSON' })
      return
    }
    const id = typeof message.id === 'string' || typeof message.id === 'number' ? message.id : null
    if (message === null || typeof message !== 'object' || message.jsonrpc !== '2.0' || typeof message.method !== 'string') {
      fail(id, { code: JSONRPC_INVALID_REQUEST, message: 'not a JSON-RPC 2.0 request' })
      return
    }
    if (message.method === '$/cancel') {
      const target = (message.params as { id?: unknown } | undefined)?.id
      if (typeof target === 'string' || typeof target === 'number') running.get(target)?.abort()
      return
    }
    if (message.method === 'events.subscribe') {
      if (unsubscribe.length === 0) {
        for (const type of FORWARDED_EVENTS) {
          const listener = (evt: Event): void => { send({ jsonrpc: '2.0', method: 'event', params: { type, detail: (evt as CustomEvent).detail } }) }
          mesh.addEventListener(type, listener)
          unsubscribe.push(() => { mesh.removeEventListener(type, listener) })
        }
      }
      if (id !== null) send({ jsonrpc: '2.0', id, result: null })
      return
    }
    const entry = Object.hasOwn(controlMethods, message.method) ? controlMethods[message.method] : undefined
    if (entry === undefined) {
      fail(id, { code: JSONRPC_METHOD_NOT_FOUND, message: `unknown method ${message.method}` })
      return
    }
    const parsed = entry.params.safeParse(message.params)
    if (!parsed.success) {
      const issue = parsed.error.issues[0]
      const err = new InvalidArgumentError(`invalid params for ${message.method}: ${issue?.path.join('.') ?? ''} ${issue?.message ?? ''}`.trim())
      fail(id, { ...errorToWire(err), code: JSONRPC_INVALID_PARAMS })
      return
    }
    const controller = new AbortController()
    if (id !== null) running.set(id, controller)
    entry.run(mesh, parsed.data ?? {}, controller.signal).then(
      (result) => { if (id !== null) send({ jsonrpc: '2.0', id, result: result ?? null }) },
      (err) => { if (id !== null) fail(id, errorToWire(err)) }
    ).finally(() => { if (id !== null) running.delete(id) })
  }
}
