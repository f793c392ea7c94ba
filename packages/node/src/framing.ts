import { LengthPrefixedDecoder } from '@libp2p/utils'
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

/**
 * Length-prefixed (unsigned varint) frames over an event-based libp2p 3 stream, in both
 * directions at once. Reading never buffers more than one frame past the limit; writing honours
 * the stream's backpressure.
 */
export class FrameChannel {
  private readonly decoder: LengthPrefixedDecoder
  private readonly step: number
  private broken = false
  private closed = false

  constructor (readonly stream: Stream, private readonly init: FrameChannelInit) {
    this.step = init.maxFrameSize + 16
    this.decoder = new LengthPrefixedDecoder({
      maxDataLength: init.maxFrameSize,
      // input is fed in slices of one frame + prefix, so the buffer never holds more than two:
      // the tail of one frame and the head of the next (a lying length cannot grow it further)
      maxBufferSize: 2 * this.step
    })
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

  private receive (data: Parameters<LengthPrefixedDecoder['decode']>[0]): void {
    if (this.broken) return
    try {
      // a chunk may finish one large frame and start the next: feed it in frame-sized slices
      for (let at = 0; at < data.byteLength; at += this.step) {
        const end = Math.min(at + this.step, data.byteLength)
        const slice = data instanceof Uint8Array ? data.subarray(at, end) : data.sublist(at, end)
        for (const frame of this.decoder.decode(slice)) {
          this.init.onFrame(frame.subarray())
        }
      }
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
