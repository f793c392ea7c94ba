// An "agent" process — think of it as your LLM agent's runtime — with a Persona Mesh node
// embedded. Everything the mesh needs is the block between the two markers: 14 lines of setup
// (main.mjs counts them and fails the example if they ever grow past 20). It starts a node,
// publishes a card with a capability, registers a remote tool (zod schema) and a task handler.
import { createMeshNode } from '@persona-mesh/node'
import { z } from 'zod'

// ---- the agent's own knowledge and skills (not mesh code) -----------------------------------
const LIBRARY = {
  libp2p: 'a modular network stack: transports, encryption, multiplexing, discovery',
  gossipsub: 'a pub/sub protocol that keeps a sparse mesh per topic and gossips the rest',
  dht: 'a distributed hash table: peers store and find records and providers by key'
}
const summarize = (text, maxWords) => text.split(/\s+/).filter(w => w.length > 3).slice(0, maxWords).join(' ')

// ---- mesh setup: begin ----
const node = await createMeshNode({
  name: 'librarian',
  home: process.env.AGENT_HOME,
  listen: ['/ip4/127.0.0.1/tcp/0'],
  mdns: false,
  card: { description: 'Librarian agent: looks terms up, summarizes texts', capabilities: ['summarize'] }
})
await node.tools.register('lookup', {
  description: 'Look a term up in the library',
  inputSchema: z.object({ term: z.string().min(1).max(100) }),
  handler: ({ term }) => ({ term, entry: LIBRARY[term.toLowerCase()] ?? null })
})
node.tasks.handle('summarize', ({ text, maxWords = 8 }) => ({ summary: summarize(text, maxWords) }))
process.once('SIGTERM', () => { void node.stop().then(() => process.exit(0)) })
// ---- mesh setup: end ----

// tell whoever started us where we are (main.mjs reads this line)
console.log(JSON.stringify({ peerId: node.peerId, multiaddrs: node.multiaddrs }))
