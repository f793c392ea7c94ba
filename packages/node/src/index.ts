/**
 * @packageDocumentation
 *
 * A Persona Mesh node: one libp2p host per persona with the mesh services on it.
 *
 * @example
 * ```ts
 * import { createMeshNode } from '@persona-mesh/node'
 *
 * const aria = await createMeshNode({ name: 'aria', mdns: false })
 * aria.handle('echo', body => body)
 * ```
 */
// must come first: libp2p needs these built-ins on Node 20
import './polyfill.js'

export { createMeshNode, DEFAULT_LISTEN, RESERVED_PREFIX, type MeshNode, type MeshNodeInit, type MeshLibp2p, type LocalTasks, type LocalTools } from './mesh-node.js'
export type { Mesh, MeshEvents, MeshStatus, FindResult, FindOptions, PeerInfo, CardProfile, MeshInbox, MeshOutbox, MeshTasks, MeshTools, MeshAudit, MeshPolicy, TraceReport, SendOptions, SendResult, BroadcastResult } from './mesh.js'
export type { TaskInfo, TaskContext, TaskHandler, TaskHandlerOptions, TaskUpdate, DelegateOptions, DelegateTarget } from './tasks/index.js'
export type { ToolDefinition, ToolContext, ToolSchema } from './tools/tool-service.js'
export type { InboxReadOptions, InboxWaitOptions, InboxWaitResult, InboxPage } from './inbox/inbox-view.js'
export type { PolicyConfig, ResolvedPolicy } from './policy/policy.js'
export type { RateLimit } from './policy/token-bucket.js'
export type { InboxEntry, OutboxRecord, AuditEvent } from '@persona-mesh/store'
export type { VerifiedCard } from './cards/index.js'
export { searchCards } from './cards/index.js'
export { capabilityCid } from './cards/card-service.js'
export type { RpcHandler, RpcContext, HandleOptions, RequestOptions } from './rpc/index.js'
export { defaultHome, defaultName, personaDir, validateName, loadOrCreateIdentity, DEFAULT_NAME } from './identity.js'
export { loadConfig, saveConfig, parseCapabilityFlag, CONFIG_FILE, type PersonaConfig } from './config.js'
export * from './errors.js'
export { serveControl, type ControlServer } from './control/server.js'
export { connectMesh, controlSocketPath, type ConnectMeshOptions, type RemoteMesh, type CallOptions } from './control/client.js'
export { CONTROL_SOCKET } from './control/wire.js'
