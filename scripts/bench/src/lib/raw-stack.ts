/**
 * A raw libp2p node with the whole stack a mesh node runs (TCP + Noise + Yamux + identify + ping
 * + kad-dht + gossipsub, same package versions and options as `createMeshNode`), optionally with
 * bootstrap and mDNS discovery: the baseline for discovery, DHT and footprint figures.
 *
 * The DHT runs its own protocol id (`/persona-mesh-bench/kad/1.0.0`) with a permissive
 * validator + selector for the `bench` namespace, `clientMode: false` and `passthroughMapper`,
 * like the mesh's private DHT. Discovered peers are dialled, as the mesh does.
 *
 * Import only after `@persona-mesh/node/polyfill` (Node 20 lacks built-ins libp2p 3 calls).
 */
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { bootstrap } from '@libp2p/bootstrap'
import type { GossipSub } from '@libp2p/gossipsub'
import { gossipsub } from '@libp2p/gossipsub'
import { identify } from '@libp2p/identify'
import type { Libp2p, PeerDiscovery, PeerId } from '@libp2p/interface'
import type { KadDHT } from '@libp2p/kad-dht'
import { kadDHT, passthroughMapper } from '@libp2p/kad-dht'
import { mdns } from '@libp2p/mdns'
import { ping } from '@libp2p/ping'
import { tcp } from '@libp2p/tcp'
import { createLibp2p } from 'libp2p'
import { CID } from 'multiformats/cid'
import * as raw from 'multiformats/codecs/raw'
import { sha256 } from 'multiformats/hashes/sha2'
import { mdnsInNetns } from './workers.js'

export const RAW_KAD_PROTOCOL = '/persona-mesh-bench/kad/1.0.0'
/** DHT record namespace of the baseline: keys `/bench/<anything>`. */
export const RAW_DHT_NAMESPACE = 'bench'

export type RawStackNode = Libp2p<{ dht: KadDHT, pubsub: GossipSub }>

export interface RawStackInit {
  listen?: string[]
  bootstrap?: string[]
  /** mDNS discovery (only ever inside a network namespace). @default false */
  mdns?: boolean
}

/** A raw node configured like `createMeshNode` configures its libp2p host; started. */
export async function createRawStackNode (init: RawStackInit = {}): Promise<RawStackNode> {
  const peerDiscovery: Array<(components: any) => PeerDiscovery> = []
  if (init.bootstrap !== undefined && init.bootstrap.length > 0) peerDiscovery.push(bootstrap({ list: init.bootstrap, timeout: 0 }))
  if (mdnsInNetns(init.mdns)) peerDiscovery.push(mdns())
  const node = await createLibp2p({
    start: false,
    addresses: { listen: init.listen ?? ['/ip4/127.0.0.1/tcp/0'] },
    transports: [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    peerDiscovery,
    connectionManager: { inboundConnectionThreshold: 100, maxConnections: 300 },
    services: {
      identify: identify(),
      ping: ping({ maxInboundStreams: 32, maxOutboundStreams: 32 }),
      dht: kadDHT({
        protocol: RAW_KAD_PROTOCOL,
        clientMode: false,
        peerInfoMapper: passthroughMapper,
        validators: { [RAW_DHT_NAMESPACE]: async () => {} },
        selectors: { [RAW_DHT_NAMESPACE]: () => 0 }
      }),
      pubsub: gossipsub({ globalSignaturePolicy: 'StrictSign', allowPublishToZeroTopicPeers: true, emitSelf: false })
    }
  })
  // like the mesh: a discovered peer is dialled, or it stays a stranger
  node.addEventListener('peer:discovery', (evt) => { dialQuietly(node, evt.detail.id) })
  await node.start()
  return node
}

function dialQuietly (node: RawStackNode, id: PeerId): void {
  if (node.status !== 'started' || id.equals(node.peerId) || node.getConnections(id).length > 0) return
  node.dial(id, { signal: AbortSignal.timeout(10_000) }).catch(() => {})
}

/** A provider key for a name (CIDv1 raw of its sha-256), like the mesh's capability keys. */
export async function nameCid (name: string): Promise<CID> {
  return CID.createV1(raw.code, await sha256.digest(new TextEncoder().encode(`persona-mesh-bench/${name}`)))
}

/** `/bench/<name>` as DHT key bytes. */
export function benchKey (name: string): Uint8Array {
  return new TextEncoder().encode(`/${RAW_DHT_NAMESPACE}/${name}`)
}

/** Iterate a DHT query to its end. */
export async function drain (events: AsyncIterable<unknown>): Promise<void> {
  for await (const _ of events) {} // eslint-disable-line no-empty
}
