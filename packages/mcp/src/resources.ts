import { ResourceTemplate } from '@modelcontextprotocol/sdk/server/mcp.js'
import { peerSummary } from './tools.js'
import type { Facade } from './context.js'
import type { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js'
import type { ReadResourceResult } from '@modelcontextprotocol/sdk/types.js'

const JSON_TYPE = 'application/json'

function json (uri: URL | string, value: unknown): ReadResourceResult {
  return { contents: [{ uri: String(uri), mimeType: JSON_TYPE, text: JSON.stringify(value, null, 2) }] }
}

function one (value: string | string[] | undefined): string {
  const v = Array.isArray(value) ? value[0] : value
  if (v === undefined || v === '') throw Object.assign(new Error('missing id in the resource URI'), { name: 'InvalidArgumentError' })
  return decodeURIComponent(v)
}

/** Register `mesh://self`, `mesh://peers`, `mesh://inbox`, `mesh://peer/{id}/card`, `mesh://task/{id}`. */
export function registerResources (server: McpServer, facade: Facade): void {
  const { mesh } = facade

  server.registerResource('self', 'mesh://self', {
    title: 'This persona',
    description: 'This persona\'s status and its own signed card.',
    mimeType: JSON_TYPE
  }, async (uri) => {
    const [status, card] = await Promise.all([mesh.status(), mesh.card()])
    return json(uri, { status, card })
  })

  server.registerResource('peers', 'mesh://peers', {
    title: 'Mesh peers',
    description: 'Known peers with liveness; what each says about itself is wrapped as untrusted peer content.',
    mimeType: JSON_TYPE
  }, async (uri) => {
    const peers = await mesh.peers()
    return json(uri, { peers: await Promise.all(peers.map(async p => peerSummary(facade, p))) })
  })

  server.registerResource('inbox', 'mesh://inbox', {
    title: 'Unread messages',
    description: 'Up to 20 unread messages, oldest first, peer content wrapped and capped (peek: nothing is marked read).',
    mimeType: JSON_TYPE
  }, async (uri) => {
    const page = await mesh.inbox.read({ unreadOnly: true, limit: 20 })
    const messages = await Promise.all(page.entries.map(async e => facade.message(e)))
    return json(uri, { messages, next_cursor: page.nextCursor ?? null, more: page.more, inbox: await facade.inbox() })
  })

  server.registerResource('peer-card', new ResourceTemplate('mesh://peer/{id}/card', {
    list: async () => {
      const cards = await mesh.cards()
      return {
        resources: cards.map(card => ({
          uri: `mesh://peer/${card.peerId}/card`,
          name: `card of ${card.peerId}`,
          mimeType: JSON_TYPE
        }))
      }
    }
  }), {
    title: 'A peer\'s card',
    description: 'A peer\'s verified card (by PeerId or persona name), wrapped as untrusted peer content.',
    mimeType: JSON_TYPE
  }, async (uri, variables) => {
    const card = await mesh.card(one(variables.id))
    return json(uri, { card: await facade.card(card) })
  })

  server.registerResource('task', new ResourceTemplate('mesh://task/{id}', {
    list: async () => {
      const tasks = await mesh.tasks.list({ limit: 50 })
      return {
        resources: tasks.map(t => ({ uri: `mesh://task/${t.id}`, name: `${t.direction} task ${t.id} (${t.status})`, mimeType: JSON_TYPE }))
      }
    }
  }), {
    title: 'A task',
    description: 'A task delegated by or to this persona; the peer\'s side wrapped as untrusted peer content.',
    mimeType: JSON_TYPE
  }, async (uri, variables) => {
    const id = one(variables.id)
    const task = await mesh.tasks.get(id)
    if (task === undefined) throw Object.assign(new Error(`no task ${id}`), { name: 'NotFoundError' })
    return json(uri, { task: await facade.task(task) })
  })
}
