/**
 * A raw libp2p node with the stack Persona Mesh uses (TCP + Noise + Yamux + identify + ping, same
 * package versions), and a minimal echo protocol over varint length-prefixed frames: the
 * baseline the mesh's figures are compared against.
 *
 * Import only after `@persona-mesh/node/polyfill` (Node 20 lacks built-ins libp2p 3 calls).
 */
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { identify } from '@libp2p/identify'
import type { Libp2p, Stream } from '@libp2p/interface'
import { ping } from '@libp2p/ping'
import { tcp } from '@libp2p/tcp'
import { LengthPrefixedDecoder } from '@libp2p/utils'
import { multiaddr } from '@multiformats/multiaddr'
import { createLibp2p } from 'libp2p'
import * as varint from 'uint8-varint'

export const ECHO_PROTOCOL = '/persona-mesh-bench/echo/1.0.0'
const MAX_FRAME = 256 * 1024
/** Headroom over the 64 requests in flight, like the mesh's per-connection rpc stream limit. */
const STREAM_LIMIT = 64

/** A node configured like `createMeshNode` configures its libp2p host (minus discovery). */
export async function createRawNode (listen: string[] = ['/ip4/127.0.0.1/tcp/0']): Promise<Libp2p> {
  return await createLibp2p({
    addresses: { listen },
    transports: [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    connectionManager: { inboundConnectionThreshold: 100, maxConnections: 300 },
    services: {
      identify: identify(),
      ping: ping({ maxInboundStreams: 32, maxOutboundStreams: 32 })
    }
  })
}

/** Prefix one frame with its unsigned-varint length. */
export function frame (payload: Uint8Array): Uint8Array {
  const len = varint.encodingLength(payload.byteLength)
  const out = new Uint8Array(len + payload.byteLength)
  varint.encodeUint8Array(payload.byteLength, out, 0)
  out.set(payload, len)
  return out
}

/** Send, honouring backpressure. */
async function sendFrame (stream: Stream, payload: Uint8Array): Promise<void> {
  if (!stream.send(frame(payload))) await stream.onDrain()
}

/** Echo every frame back, unchanged, on the stream it came from. */
export async function handleEcho (node: Libp2p): Promise<void> {
  await node.handle(ECHO_PROTOCOL, (stream) => {
    const decoder = new LengthPrefixedDecoder({ maxDataLength: MAX_FRAME, maxBufferSize: MAX_FRAME + 16 })
    stream.addEventListener('message', (evt) => {
      try {
        // at most 64 requests of ~1 KiB are in flight: far below the stream's write buffer, so
        // answers are sent at once (like the mesh's server, which does not wait either)
        for (const f of decoder.decode(evt.data)) stream.send(frame(f.subarray()))
      } catch (err) {
        stream.abort(err as Error)
      }
    })
  }, { maxInboundStreams: STREAM_LIMIT, maxOutboundStreams: STREAM_LIMIT })
}

const encoder = new TextEncoder()
const decoder = new TextDecoder()

/**
 * One reused outbound echo stream carrying many requests at once. A request frame is a 4-byte
 * big-endian id followed by the JSON-encoded body; answers are matched by id.
 */
export class EchoChannel {
  readonly pending = new Map<number, { resolve(body: unknown): void, reject(err: Error): void }>()
  private nextId = 0
  private readonly decoder = new LengthPrefixedDecoder({ maxDataLength: MAX_FRAME, maxBufferSize: MAX_FRAME + 16 })

  constructor (readonly stream: Stream) {
    stream.addEventListener('message', (evt) => {
      for (const f of this.decoder.decode(evt.data)) {
        const bytes = f.subarray()
        const id = new DataView(bytes.buffer, bytes.byteOffset, 4).getUint32(0)
        const body = JSON.parse(decoder.decode(bytes.subarray(4)))
        const waiter = this.pending.get(id)
        this.pending.delete(id)
        waiter?.resolve(body)
      }
    })
    stream.addEventListener('close', (evt) => {
      const err = evt.error ?? new Error('echo stream closed')
      for (const w of this.pending.values()) w.reject(err)
      this.pending.clear()
    })
  }

  async request (body: unknown): Promise<unknown> {
    this.nextId = (this.nextId + 1) >>> 0
    const id = this.nextId
    const json = encoder.encode(JSON.stringify(body))
    const payload = new Uint8Array(4 + json.byteLength)
    new DataView(payload.buffer).setUint32(0, id)
    payload.set(json, 4)
    const { promise, resolve, reject } = Promise.withResolvers<unknown>()
    this.pending.set(id, { resolve, reject })
    await sendFrame(this.stream, payload)
    return await promise
  }
}

/** A fixed pool of echo streams to one peer; each request goes to the least busy one. */
export class EchoPool {
  private constructor (readonly channels: EchoChannel[]) {}

  static async open (node: Libp2p, target: string, size: number): Promise<EchoPool> {
    const ma = multiaddr(target)
    await node.dial(ma, { signal: AbortSignal.timeout(10_000) })
    const channels: EchoChannel[] = []
    for (let i = 0; i < size; i++) {
      const stream = await node.dialProtocol(ma, ECHO_PROTOCOL, { signal: AbortSignal.timeout(10_000) })
      channels.push(new EchoChannel(stream))
    }
    return new EchoPool(channels)
  }

  leastBusy (): EchoChannel {
    let best = this.channels[0]
    for (const c of this.channels) if (c.pending.size < best.pending.size) best = c
    return best
  }

  async close (): Promise<void> {
    await Promise.all(this.channels.map(async c => {
      try {
        await c.stream.close({ signal: AbortSignal.timeout(1000) })
      } catch (err) {
        c.stream.abort(err as Error)
      }
    }))
  }
}
