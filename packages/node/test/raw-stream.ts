import { LengthPrefixedDecoder } from '@libp2p/utils'
import { MAX_FRAME_SIZE } from '@persona-mesh/protocol'
import * as varint from 'uint8-varint'
import type { Stream } from '@libp2p/interface'

/** `bytes` behind an unsigned-varint length prefix, as every Persona Mesh stream frames them. */
export function lengthPrefixed (bytes: Uint8Array): Uint8Array {
  const prefix = varint.encode(bytes.byteLength)
  const out = new Uint8Array(prefix.byteLength + bytes.byteLength)
  out.set(prefix, 0)
  out.set(bytes, prefix.byteLength)
  return out
}

export function concat (...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.byteLength, 0))
  let at = 0
  for (const part of parts) {
    out.set(part, at)
    at += part.byteLength
  }
  return out
}

/**
 * A raw stream for hostile-input tests: bytes out exactly as given; answers decoded with `decode`
 * into `frames` (undecodable ones into `garbage`); close events recorded; `until` waits on a
 * condition re-checked at every change, with a timeout.
 */
export class RawStream<F> {
  readonly frames: F[] = []
  readonly garbage: Error[] = []
  remoteClosedWrite = false
  closed = false
  private readonly decoder = new LengthPrefixedDecoder({ maxDataLength: MAX_FRAME_SIZE, maxBufferSize: 4 * MAX_FRAME_SIZE })
  private readonly listeners = new Set<() => void>()

  constructor (readonly stream: Stream, private readonly decode: (bytes: Uint8Array) => F, private readonly describe: (frame: F) => unknown, private readonly waitMs = 15_000) {
    stream.addEventListener('message', (evt) => {
      try {
        for (const frame of this.decoder.decode(evt.data)) {
          try {
            this.frames.push(this.decode(frame.subarray()))
          } catch (err) {
            this.garbage.push(err as Error)
          }
        }
      } catch (err) {
        this.garbage.push(err as Error)
      }
      this.changed()
    })
    stream.addEventListener('remoteCloseWrite', () => { this.remoteClosedWrite = true; this.changed() })
    stream.addEventListener('close', () => { this.closed = true; this.changed() })
  }

  /** The other side will send nothing more on this stream. */
  get ended (): boolean {
    return this.remoteClosedWrite || this.closed
  }

  send (bytes: Uint8Array): void {
    this.stream.send(bytes)
  }

  sendFrame (bytes: Uint8Array): void {
    this.send(lengthPrefixed(bytes))
  }

  /** Resolve once `condition` holds (re-checked on every frame and close), or fail after a timeout. */
  async until (condition: () => boolean, what: string, timeout = this.waitMs): Promise<void> {
    if (condition()) return
    await new Promise<void>((resolve, reject) => {
      const check = (): void => {
        if (!condition()) return
        cleanup()
        resolve()
      }
      const timer = setTimeout(() => {
        cleanup()
        reject(new Error(`timed out waiting for ${what}; got ${JSON.stringify(this.frames.map(this.describe))}, ended: ${this.ended}`))
      }, timeout)
      const cleanup = (): void => { clearTimeout(timer); this.listeners.delete(check) }
      this.listeners.add(check)
    })
  }

  abort (): void {
    this.stream.abort(new Error('test case over'))
  }

  private changed (): void {
    for (const listener of [...this.listeners]) listener()
  }
}
