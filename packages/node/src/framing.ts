import * as varint from 'uint8-varint'
import type { Stream } from '@libp2p/interface'

export interface FrameChannelInit {
  /** Largest frame accepted or sent. */
  maxFrameSize: number
  /** Called once per complete frame, in order. */
  onFrame(frame: Uint8Array): void
  /** The peer broke the framing (oversized or invalid length). The channel stops reading. */
  onFramingError(err: Error): void
  /** The stream closed, cleanly or not. Called once. */
  onClose(err?: Error): void
}

/** A frame's length prefix is not a valid unsigned varint. */
export class FramingError extends Error {
  override name = 'FramingError'
}

/** A frame's length prefix says more than the limit. */
export class FrameTooLargeError extends FramingError {
  override name = 'FrameTooLargeError'
}

/** Longest unsigned varint of a length below 2^53. */
const MAX_PREFIX_BYTES = 8

/**
 * Unsigned-varint length-prefixed frames out of a byte stream, chunk by chunk. A frame that lies
 * inside one chunk is handed out as a view of it, with no copy and no per-frame bookkeeping
 * (delivery answers are one 70-byte frame per message, hundreds to a chunk); only a frame split
 * across chunks is held, never more than that one frame, and a length over `maxFrameSize` is
 * refused before any of its body is kept. Empty frames are skipped.
 */
export class FrameDecoder {
  /** The start of a frame split across chunks (views of them), how many bytes that is, and its prefix once read. */
  private parts: Uint8Array[] = []
  private partBytes = 0
  private partPrefix: Prefix | undefined

  constructor (private readonly maxFrameSize: number) {}

  /** Calls `onFrame` for each frame `chunk` completes, in order. Throws a {@link FramingError}; the stream is unusable after that. */
  decode (chunk: Uint8Array | Iterable<Uint8Array>, onFrame: (frame: Uint8Array) => void): void {
    if (chunk instanceof Uint8Array) {
      this.decodeChunk(chunk, onFrame)
    } else {
      for (const part of chunk) this.decodeChunk(part, onFrame)
    }
  }

  private decodeChunk (chunk: Uint8Array, onFrame: (frame: Uint8Array) => void): void {
    let at = 0
    if (this.partBytes > 0) {
      let header = this.partPrefix
      if (header === undefined) {
        // the prefix itself was split (less than 8 bytes are held)
        header = this.prefix(concat([...this.parts, chunk.subarray(0, MAX_PREFIX_BYTES)], this.partBytes + Math.min(chunk.byteLength, MAX_PREFIX_BYTES)), 0)
      }
      if (header === undefined || this.partBytes + chunk.byteLength < header.total) {
        this.hold(chunk, header)
        return
      }
      at = header.total - this.partBytes
      const frame = concat([...this.parts, chunk.subarray(0, at)], header.total).subarray(header.size)
      this.parts = []
      this.partBytes = 0
      this.partPrefix = undefined
      if (frame.byteLength > 0) onFrame(frame)
    }
    while (at < chunk.byteLength) {
      const header = this.prefix(chunk, at)
      if (header === undefined || at + header.total > chunk.byteLength) {
        this.hold(chunk.subarray(at), header)
        return
      }
      if (header.total > header.size) onFrame(chunk.subarray(at + header.size, at + header.total))
      at += header.total
    }
  }

  /** Keep `bytes` as part of a frame the next chunks finish. */
  private hold (bytes: Uint8Array, header: Prefix | undefined): void {
    this.parts.push(bytes)
    this.partBytes += bytes.byteLength
    this.partPrefix = header
    // a prefix that has not ended within its longest possible size never will
    if (header === undefined && this.partBytes >= MAX_PREFIX_BYTES) throw new FramingError('invalid frame length prefix')
  }

  /** The length prefix at `at`; `undefined` if the bytes end inside it. */
  private prefix (bytes: Uint8Array, at: number): Prefix | undefined {
    let length = 0
    let factor = 1
    for (let i = 0; i < MAX_PREFIX_BYTES; i++) {
      if (at + i >= bytes.byteLength) return undefined
      const b = bytes[at + i]!
      length += (b & 0x7f) * factor
      if (length > this.maxFrameSize) throw new FrameTooLargeError(`frame longer than ${this.maxFrameSize} bytes`)
      if (b < 0x80) return { size: i + 1, total: i + 1 + length }
      factor *= 128
    }
    throw new FramingError('invalid frame length prefix')
  }
}

/** A frame's length prefix: its own size, and the frame's size with it. */
interface Prefix {
  size: number
  total: number
}

function concat (parts: Uint8Array[], length: number): Uint8Array {
  const out = new Uint8Array(length)
  let at = 0
  for (const p of parts) {
    const n = Math.min(p.byteLength, length - at)
    out.set(n === p.byteLength ? p : p.subarray(0, n), at)
    at += n
    if (at === length) break
  }
  return out
}

/**
 * Length-prefixed (unsigned varint) frames over an event-based libp2p 3 stream, in both
 * directions at once. Reading never buffers more than one frame past the limit; writing honours
 * the stream's backpressure.
 */
export class FrameChannel {
  private readonly decoder: FrameDecoder
  private readonly onFrame: (frame: Uint8Array) => void
  private broken = false
  private closed = false

  constructor (readonly stream: Stream, private readonly init: FrameChannelInit) {
    this.decoder = new FrameDecoder(init.maxFrameSize)
    this.onFrame = (frame) => { init.onFrame(frame) }
    stream.addEventListener('message', (evt) => { this.receive(evt.data) })
    stream.addEventListener('close', (evt) => {
      if (this.closed) return
      this.closed = true
      init.onClose(evt.error)
    })
  }

  get open (): boolean {
    return !this.closed && this.stream.status === 'open' && this.stream.writeStatus === 'writable'
  }

  private receive (data: Uint8Array | Iterable<Uint8Array>): void {
    if (this.broken) return
    try {
      this.decoder.decode(data, this.onFrame)
    } catch (err) {
      this.broken = true
      this.init.onFramingError(err as Error)
    }
  }

  /** Queue one frame; resolves once the stream accepted it (waits when the stream needs to drain). */
  async send (frame: Uint8Array): Promise<void> {
    const prefix = varint.encode(frame.byteLength)
    const framed = new Uint8Array(prefix.byteLength + frame.byteLength)
    framed.set(prefix, 0)
    framed.set(frame, prefix.byteLength)
    if (!this.stream.send(framed)) {
      await this.stream.onDrain()
    }
  }

  /** Finish writing and close; falls back to abort if the peer does not let us close cleanly. */
  async close (signal?: AbortSignal): Promise<void> {
    try {
      await this.stream.close({ signal: signal ?? AbortSignal.timeout(1000) })
    } catch (err) {
      this.stream.abort(err as Error)
    }
  }

  abort (err: Error): void {
    this.stream.abort(err)
  }
}
