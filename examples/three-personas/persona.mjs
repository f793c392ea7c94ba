// One persona = one process: a node embedded with createMeshNode, the persona's task handlers
// and tools, and its control socket (so `pmesh --name <persona> …` and `pmesh mcp` can attach).
//
//   node persona.mjs <name> <home> [--bootstrap <multiaddr>] [--listen <multiaddr>] [--log <file>]
//
// Started by main.mjs over an IPC channel: it reports `{ type: 'ready', … }` once listening and
// narrates what it does as `{ type: 'log', text }`. mDNS is off: 127.0.0.1 and one bootstrap only.
import { appendFileSync } from 'node:fs'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { parseArgs } from 'node:util'
import { CONTROL_SOCKET, createMeshNode, serveControl } from '@persona-mesh/node'
import { z } from 'zod'
import { analyzeCode, draftParagraph, review, revise } from './work.mjs'

const { positionals: [name, home], values: flags } = parseArgs({
  allowPositionals: true,
  options: { bootstrap: { type: 'string', multiple: true }, listen: { type: 'string' }, log: { type: 'string' } }
})
if (name === undefined || home === undefined) {
  console.error('usage: node persona.mjs <name> <home> [--bootstrap <multiaddr>] [--listen <multiaddr>] [--log <file>]')
  process.exit(2)
}

/** Steps of the handlers are paced so each progress report goes out (the mesh sends at most one per 200 ms). */
const PACE_MS = 250
let detached = false

function tell (text) {
  if (!detached && process.connected) process.send({ type: 'log', text })
  else if (flags.log !== undefined) appendFileSync(flags.log, `${new Date().toISOString()} ${name}: ${text}\n`)
}

const ROLES = {
  aria: {
    description: 'Writer: drafts short stories and edits prose',
    capabilities: [
      { name: 'write_story', description: 'draft a short story on a topic', tags: ['writing', 'fiction'] },
      { name: 'edit_prose', description: 'revise a text following review notes', tags: ['writing', 'editing'] }
    ]
  },
  kira: {
    description: 'Analyst: reviews prose and code',
    capabilities: [
      { name: 'analyze_code', description: 'metrics and warnings for a code snippet', tags: ['code', 'analysis'] },
      { name: 'review', description: 'review a text: filler words, doubled words, long sentences', tags: ['review', 'editing'] }
    ]
  },
  coordinator: {
    description: 'Coordinator: plans work and hands it to the personas who can do it',
    capabilities: [{ name: 'coordinate', description: 'split a job into tasks for other personas', tags: ['planning'] }]
  }
}
const role = ROLES[name]
if (role === undefined) {
  console.error(`unknown persona ${name} (one of ${Object.keys(ROLES).join(', ')})`)
  process.exit(2)
}

const node = await createMeshNode({
  name,
  home,
  listen: [flags.listen ?? '/ip4/127.0.0.1/tcp/0'],
  bootstrap: flags.bootstrap ?? [],
  mdns: false,
  card: { description: role.description, capabilities: role.capabilities }
})

if (name === 'aria') {
  node.tasks.handle('write_story', async ({ topic, paragraphs = 3 }, ctx) => {
    tell(`drafting ${paragraphs} paragraphs on "${topic}" for ${await nameOf(ctx.from)}`)
    const out = []
    for (let i = 0; i < paragraphs; i++) {
      await sleep(PACE_MS, undefined, { signal: ctx.signal })
      out.push(draftParagraph(topic, i))
      ctx.progress(Math.round(100 * (i + 1) / paragraphs), `paragraph ${i + 1}/${paragraphs} drafted`)
    }
    return { title: `The keeper and ${topic}`, text: out.join(' ') }
  })
  node.tasks.handle('edit_prose', async ({ text, notes }, ctx) => {
    tell(`revising the draft: ${notes.length} review notes to apply`)
    for (const [i, kind] of ['filler', 'doubled', 'long'].entries()) {
      await sleep(PACE_MS, undefined, { signal: ctx.signal })
      ctx.progress(Math.round(100 * (i + 1) / 3), `${kind} notes applied`)
    }
    return revise(text, notes)
  })
}

if (name === 'kira') {
  node.tasks.handle('review', async ({ text }, ctx) => {
    tell(`reviewing ${text.length} characters for ${await nameOf(ctx.from)}`)
    await sleep(PACE_MS, undefined, { signal: ctx.signal })
    ctx.progress(50, 'sentences checked')
    await sleep(PACE_MS, undefined, { signal: ctx.signal })
    return review(text)
  })
  const Snippet = z.object({
    code: z.string().min(1).max(20_000),
    language: z.enum(['js', 'ts', 'py']).default('js')
  })
  node.tasks.handle('analyze_code', (input) => analyzeCode(Snippet.parse(input)))
  // a remote tool: advertised in kira's card, arguments checked against the zod schema on kira's side
  await node.tools.register('analyze_code', {
    description: 'Metrics and warnings for a code snippet (lines, functions, TODOs, nesting)',
    inputSchema: Snippet,
    outputSchema: z.object({
      language: z.string(),
      lines: z.number().int(),
      codeLines: z.number().int(),
      comments: z.number().int(),
      functions: z.number().int(),
      todos: z.number().int(),
      maxNesting: z.number().int(),
      longestLine: z.number().int(),
      warnings: z.array(z.string())
    }),
    handler: async (args, ctx) => {
      tell(`analyze_code called by ${await nameOf(ctx.from)} (${args.code.split('\n').length} lines of ${args.language})`)
      return analyzeCode(args)
    }
  })
}

// the workers listen on the status topic (subscriptions survive restarts) and narrate what arrives
if (name !== 'coordinator') await node.subscribe('status')
let messages = 0
node.addEventListener('message:received', (evt) => {
  const entry = evt.detail
  if (entry.kind === 'broadcast') {
    void nameOf(entry.from).then(from => { tell(`heard on #${entry.topic} from ${from}: ${JSON.stringify(entry.body)}`) })
  } else if (entry.kind === 'message') {
    // numbered on arrival: the name lookup below may finish after the next message arrived
    const n = ++messages
    void nameOf(entry.from).then(from => { tell(`inbox: message #${n} from ${from}: ${JSON.stringify(entry.body)}`) })
  }
})

async function nameOf (peerId) {
  try {
    return (await node.card(peerId)).name
  } catch {
    return peerId.slice(-8)
  }
}

const control = await serveControl(node, join(node.dataDir, CONTROL_SOCKET))

let stopping
async function shutdown (code) {
  stopping ??= (async () => {
    setTimeout(() => process.exit(1), 10_000).unref()
    await control.close().catch(() => {})
    await node.stop().catch(() => {})
    process.exit(code)
  })()
  return stopping
}
process.once('SIGTERM', () => { void shutdown(0) })
process.once('SIGINT', () => { void shutdown(0) })
process.on('message', (msg) => {
  // --keep: from now on the persona outlives main.mjs and narrates into its log file
  if (msg?.type === 'detach') {
    detached = true
    process.disconnect()
  }
})
// main.mjs went away without saying --keep: do not linger
process.on('disconnect', () => { if (!detached) void shutdown(0) })

process.send({ type: 'ready', peerId: node.peerId, name: node.name, multiaddrs: node.multiaddrs, dataDir: node.dataDir, pid: process.pid })
