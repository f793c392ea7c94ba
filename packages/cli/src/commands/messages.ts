import { InvalidArgumentError } from '@persona-mesh/node'
import { CliExit, EXIT, printJson, printLine, printTable, safeText, withProgress } from '../output.js'
import { globals, parseJsonArg, positiveInt, withMesh } from './common.js'
import type { Command } from 'commander'
import type { RemoteMesh } from '@persona-mesh/node'
import type { InboxEntry } from '@persona-mesh/store'
import type { JsonValue, Priority } from '@persona-mesh/protocol'

/** TEXT becomes `{ "text": TEXT }`; `--body` takes any JSON. Exactly one of them. */
function bodyOf (text: string | undefined, body: string | undefined): JsonValue {
  if (text !== undefined && body !== undefined) throw new InvalidArgumentError('give either TEXT or --body, not both')
  if (body !== undefined) return parseJsonArg(body, '--body')
  if (text !== undefined) return { text }
  throw new InvalidArgumentError('nothing to send: give TEXT or --body JSON')
}

function time (ms: number): string {
  return new Date(ms).toISOString().replace('T', ' ').slice(0, 19)
}

async function waitSettled (mesh: RemoteMesh, id: string, seconds: number): Promise<{ status: string, reason?: string }> {
  const deadline = Date.now() + seconds * 1000
  // events say it first; polling the outbox covers an event missed before we listened
  const settled = new Promise<void>((resolve) => {
    for (const type of ['message:delivered', 'message:failed', 'message:expired'] as const) {
      mesh.addEventListener(type, (evt) => { if (evt.detail.id === id) resolve() })
    }
  })
  while (Date.now() < deadline) {
    const record = await mesh.outbox.get(id)
    if (record !== undefined && record.status !== 'queued') return record.reason !== undefined ? { status: record.status, reason: record.reason } : { status: record.status }
    await Promise.race([settled, new Promise(resolve => setTimeout(resolve, 250))])
  }
  throw new CliExit(`message ${id} still queued after ${seconds}s (it stays in the outbox and will be delivered when the peer is reachable)`, EXIT.timeout)
}

export function registerMessages (program: Command): void {
  program
    .command('send')
    .description('send a durable message: queued at once, delivered when the peer is reachable, never lost')
    .argument('<to>', 'recipient: persona name or PeerId')
    .argument('[text]', 'message text (sent as {"text": …})')
    .option('--body <json>', 'message body as JSON instead of text')
    .option('--thread <id>', 'conversation id')
    .option('--reply-to <id>', 'id of the message this answers')
    .option('--priority <p>', 'low, normal or high', 'normal')
    .option('--ttl <seconds>', 'give up after this long (default 7 days)', positiveInt)
    .option('--wait-delivered [seconds]', 'wait until delivered, failed or expired (default 30 s); exit 4 if still queued')
    .addHelpText('after', '\nExample:\n  pmesh send --name coordinator kira "please review PR 12" --thread pr-12 --wait-delivered')
    .action(async (to: string, text: string | undefined, opts: { body?: string, thread?: string, replyTo?: string, priority: string, ttl?: number, waitDelivered?: string | boolean }, command: Command) => {
      const { json } = globals(command)
      if (!['low', 'normal', 'high'].includes(opts.priority)) throw new InvalidArgumentError('--priority is low, normal or high')
      const body = bodyOf(text, opts.body)
      await withMesh(command, async (mesh) => {
        const result = await mesh.send(to, body, {
          priority: opts.priority as Priority,
          ...(opts.thread !== undefined ? { thread: opts.thread } : {}),
          ...(opts.replyTo !== undefined ? { replyTo: opts.replyTo } : {}),
          ...(opts.ttl !== undefined ? { ttl: opts.ttl * 1000 } : {})
        })
        let final: { status: string, reason?: string } = { status: result.status }
        if (opts.waitDelivered !== undefined && opts.waitDelivered !== false) {
          const seconds = opts.waitDelivered === true ? 30 : positiveInt(opts.waitDelivered)
          final = await withProgress(`waiting for ${to} to receive it`, waitSettled(mesh, result.id, seconds))
        }
        if (json === true) printJson({ ...result, ...final })
        else printLine(`${result.id} ${final.status}${final.reason !== undefined ? `: ${final.reason}` : ''}`)
        if (final.status === 'failed' || final.status === 'expired') throw new CliExit('', EXIT.error)
      })
    })

  program
    .command('inbox')
    .description('read the inbox (peek: never consumes; `pmesh ack` marks handled). Peer content is shown sanitized.')
    .option('--wait <seconds>', 'if nothing is unread, wait this long for a message; exit 4 on timeout', positiveInt)
    .option('--from <peer>', 'only from this persona name or PeerId')
    .option('--thread <id>', 'only this thread')
    .option('--topic <topic>', 'only broadcasts on this topic')
    .option('--all', 'include messages already acked')
    .option('--quarantine', 'show the quarantine (messages from unknown senders) instead')
    .option('--cursor <cursor>', 'continue after this position')
    .option('--limit <n>', 'most messages', positiveInt, 20)
    .addHelpText('after', '\nExample:\n  pmesh inbox --name kira --wait 60 --json')
    .action(async (opts: { wait?: number, from?: string, thread?: string, topic?: string, all?: boolean, quarantine?: boolean, cursor?: string, limit: number }, command: Command) => {
      const { json } = globals(command)
      await withMesh(command, async (mesh) => {
        const from = opts.from !== undefined ? await mesh.resolve(opts.from) : undefined
        const filter = {
          ...(from !== undefined ? { from } : {}),
          ...(opts.thread !== undefined ? { thread: opts.thread } : {}),
          ...(opts.topic !== undefined ? { topic: opts.topic } : {})
        }
        let entries: InboxEntry[]
        let nextCursor: string | undefined
        let more = false
        if (opts.wait !== undefined) {
          const result = await withProgress('waiting for a message', mesh.inbox.wait({ ...filter, timeout: opts.wait * 1000, limit: opts.limit, ...(opts.cursor !== undefined ? { cursor: opts.cursor } : {}) }))
          if (result.timedOut) throw new CliExit(`no message within ${opts.wait}s`, EXIT.timeout)
          entries = result.messages
          nextCursor = result.nextCursor
        } else {
          const page = await mesh.inbox.read({ ...filter, unreadOnly: opts.all !== true, quarantined: opts.quarantine === true, limit: opts.limit, ...(opts.cursor !== undefined ? { cursor: opts.cursor } : {}) })
          entries = page.entries
          nextCursor = page.nextCursor
          more = page.more
        }
        if (json === true) {
          printJson({ messages: entries, nextCursor, unread: await mesh.inbox.unread() })
          return
        }
        if (entries.length === 0) {
          printLine(opts.all === true ? 'inbox is empty' : 'no unread messages')
          return
        }
        const peers = new Map((await mesh.peers()).map(p => [p.peerId, p.name ?? '']))
        printTable(entries.map(e => ({
          id: e.id,
          from: peers.get(e.from) || `${e.from.slice(0, 12)}…`,
          kind: e.topic !== undefined ? `broadcast:${e.topic}` : e.kind,
          thread: e.thread ?? '',
          received: time(e.receivedAt),
          body: safeText(e.body, 80)
        })), ['id', 'from', 'kind', 'thread', 'received', 'body'])
        if (more && nextCursor !== undefined) process.stderr.write(`more: pmesh inbox --cursor ${nextCursor}\n`)
      })
    })

  program
    .command('ack')
    .description('mark inbox messages handled')
    .argument('<ids...>', 'message ids')
    .addHelpText('after', '\nExample:\n  pmesh ack --name kira 01JD3Q…')
    .action(async (ids: string[], _opts, command: Command) => {
      const { json } = globals(command)
      const results = await withMesh(command, async mesh => mesh.inbox.ack(ids))
      if (json === true) printJson(ids.map((id, i) => ({ id, result: results[i] })))
      else ids.forEach((id, i) => { printLine(`${id} ${results[i]}`) })
      if (results.includes('unknown')) throw new CliExit('', EXIT.notFound)
    })

  program
    .command('outbox')
    .description('what we sent: queued, delivered, expired or failed (with the reason)')
    .argument('[id]', 'one message')
    .option('--status <status>', 'queued, delivered, expired or failed')
    .option('--limit <n>', 'most entries', positiveInt, 50)
    .addHelpText('after', '\nExample:\n  pmesh outbox --name coordinator --status queued')
    .action(async (id: string | undefined, opts: { status?: string, limit: number }, command: Command) => {
      const { json } = globals(command)
      await withMesh(command, async (mesh) => {
        if (id !== undefined) {
          const record = await mesh.outbox.get(id)
          if (record === undefined) throw new CliExit(`no outgoing message ${id}`, EXIT.notFound)
          if (json === true) printJson(record)
          else printLine(`${record.id} to ${record.to}: ${record.status}${record.reason !== undefined ? ` (${record.reason})` : ''}, ${record.attempts} attempt(s)`)
          return
        }
        if (opts.status !== undefined && !['queued', 'delivered', 'expired', 'failed'].includes(opts.status)) {
          throw new InvalidArgumentError('--status is queued, delivered, expired or failed')
        }
        const page = await mesh.outbox.list({ limit: opts.limit, reverse: true, ...(opts.status !== undefined ? { status: opts.status as 'queued' } : {}) })
        if (json === true) {
          printJson(page)
          return
        }
        if (page.entries.length === 0) {
          printLine('outbox is empty')
          return
        }
        printTable(page.entries.map(r => ({ id: r.id, to: `${r.to.slice(0, 16)}…`, status: r.status, reason: r.reason ?? '', created: time(r.createdAt), attempts: r.attempts })), ['id', 'to', 'status', 'reason', 'created', 'attempts'])
      })
    })

  program
    .command('broadcast')
    .description('publish to a topic over gossip: best-effort, not queued; says how many peers it reached')
    .argument('<topic>', 'topic name')
    .argument('[text]', 'message text (sent as {"text": …})')
    .option('--body <json>', 'body as JSON instead of text')
    .addHelpText('after', '\nExample:\n  pmesh broadcast --name coordinator status "pipeline finished"')
    .action(async (topic: string, text: string | undefined, opts: { body?: string }, command: Command) => {
      const { json } = globals(command)
      const result = await withMesh(command, async mesh => mesh.broadcast(topic, bodyOf(text, opts.body)))
      if (json === true) printJson(result)
      else printLine(`${result.id} sent to ${result.recipients} peer(s) on ${topic}`)
      if (result.warning !== undefined) process.stderr.write(`warning: ${result.warning}\n`)
    })

  for (const [name, description] of [['subscribe', 'receive broadcasts on a topic (remembered across restarts)'], ['unsubscribe', 'stop receiving a topic']] as const) {
    program
      .command(name)
      .description(description)
      .argument('<topic>', 'topic name')
      .addHelpText('after', `\nExample:\n  pmesh ${name} --name kira status`)
      .action(async (topic: string, _opts, command: Command) => {
        const { json } = globals(command)
        const topics = await withMesh(command, async mesh => name === 'subscribe' ? mesh.subscribe(topic) : mesh.unsubscribe(topic))
        if (json === true) printJson(topics)
        else printLine(topics.length > 0 ? `subscribed: ${topics.join(', ')}` : 'no subscriptions')
      })
  }

  program
    .command('topics')
    .description('list subscribed topics')
    .action(async (_opts, command: Command) => {
      const { json } = globals(command)
      const topics = await withMesh(command, async mesh => mesh.topics())
      if (json === true) printJson(topics)
      else printLine(topics.length > 0 ? topics.join('\n') : 'no subscriptions')
    })
}
