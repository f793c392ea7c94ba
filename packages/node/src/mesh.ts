import type { RequestOptions } from './rpc/index.js'
import type { JsonValue } from '@persona-mesh/protocol'
import type { TypedEventTarget } from 'main-event'

/** A snapshot of a running persona's node. */
export interface MeshStatus {
  peerId: string
  name: string
  multiaddrs: string[]
  running: boolean
  /** ms since epoch; 0 when not running */
  startedAt: number
  connections: number
  /** PeerIds of connected peers */
  peers: string[]
}

export interface MeshEvents {
  /** A connection to a peer opened (detail: its PeerId). */
  'peer:connect': CustomEvent<string>
  /** The last connection to a peer closed (detail: its PeerId). */
  'peer:disconnect': CustomEvent<string>
}

/**
 * What a persona can do on the mesh. Implemented in-process by `MeshNode` and, for a running
 * daemon, by `connectMesh()`; the CLI and the MCP facade only ever see this interface.
 */
export interface Mesh extends TypedEventTarget<MeshEvents> {
  readonly peerId: string
  readonly name: string
  status(): Promise<MeshStatus>
  /** Connect to a peer by multiaddr (must end in `/p2p/<PeerId>`). */
  dial(multiaddr: string, options?: { signal?: AbortSignal }): Promise<void>
  /**
   * A live request to a peer (PeerId string or multiaddr). Resolves with the response body;
   * throws `NackError` (with the peer's reason), `TimeoutError`, `PeerUnreachableError`, …
   */
  request(peer: string, method: string, body: JsonValue, options?: RequestOptions): Promise<JsonValue>
}
