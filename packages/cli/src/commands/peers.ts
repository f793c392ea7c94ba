import { CliExit, EXIT, printJson, printLine, printTable } from '../output.js'
import { globals, positiveInt, withMesh } from './common.js'
import type { Command } from 'commander'
import type { Card } from '@persona-mesh/protocol'

function ago (ms: number): string {
  if (ms === 0) return 'never'
  const s = Math.round((Date.now() - ms) / 1000)
  return s < 60 ? `${s}s ago` : s < 3600 ? `${Math.round(s / 60)}m ago` : `${Math.round(s / 3600)}h ago`
}

function capabilities (card?: Card): string {
  return card === undefined ? '' : card.capabilities.map(c => c.name).join(', ')
}

export function registerPeers (program: Command): void {
  program
    .command('peers')
    .description('list mesh peers: name, PeerId, online, last seen, RTT, capabilities')
    .option('--online', 'only peers online now')
    .addHelpText('after', '\nExample:\n  pmesh peers --name aria --online')
    .action(async (opts: { online?: boolean }, command: Command) => {
      const { json } = globals(command)
      const peers = await withMesh(command, async mesh => mesh.peers({ onlineOnly: opts.online === true }))
      if (json === true) {
        printJson(peers)
        return
      }
      if (peers.length === 0) {
        printLine('no peers known yet')
        return
      }
      printTable(peers.map(p => ({
        name: p.name ?? '?',
        peerId: p.peerId,
        online: p.online ? 'yes' : 'no',
        seen: ago(p.lastSeen),
        rtt: p.rtt !== undefined ? `${p.rtt}ms` : '',
        capabilities: capabilities(p.card)
      })), ['name', 'peerId', 'online', 'seen', 'rtt', 'capabilities'])
    })

  program
    .command('cards')
    .description('show verified capability cards: all we hold, or one peer\'s (by name or PeerId)')
    .argument('[peer]', 'persona name or PeerId; "self" for our own')
    .addHelpText('after', '\nExample:\n  pmesh cards --name aria kira --json')
    .action(async (peer: string | undefined, _opts, command: Command) => {
      const { json } = globals(command)
      const cards = await withMesh(command, async (mesh) => {
        if (peer === undefined) return mesh.cards()
        return [await mesh.card(peer === 'self' ? undefined : peer)]
      })
      if (json === true) {
        printJson(peer === undefined ? cards : cards[0])
        return
      }
      if (cards.length === 0) {
        printLine('no cards yet')
        return
      }
      for (const card of cards) {
        printLine(`${card.name}  ${card.peerId}`)
        if (card.description !== '') printLine(`  ${card.description}`)
        for (const c of card.capabilities) printLine(`  capability ${c.name}${c.tags.length > 0 ? ` [${c.tags.join(', ')}]` : ''}${c.description !== '' ? ` — ${c.description}` : ''}`)
        for (const t of card.tools) printLine(`  tool       ${t.name}${t.description !== '' ? ` — ${t.description}` : ''}`)
        printLine(`  seq ${card.seq}, expires ${new Date(card.expiresAt).toISOString()}`)
      }
    })

  program
    .command('find')
    .description('find peers by capability, tool, name, tag or description (exact capability names also ask the DHT)')
    .argument('<query>', 'what to look for, e.g. analyze_code or "french translation"')
    .option('--limit <n>', 'most results', positiveInt)
    .addHelpText('after', '\nExit code 3 when nothing matches.\n\nExample:\n  pmesh find --name coordinator analyze_code')
    .action(async (query: string, opts: { limit?: number }, command: Command) => {
      const { json } = globals(command)
      const results = await withMesh(command, async mesh => mesh.find(query, opts.limit !== undefined ? { limit: opts.limit } : {}))
      if (json === true) {
        printJson(results)
      } else if (results.length > 0) {
        printTable(results.map(r => ({
          name: r.name,
          peerId: r.peerId,
          online: r.online ? 'yes' : 'no',
          score: r.score,
          capabilities: capabilities(r.card)
        })), ['name', 'peerId', 'online', 'score', 'capabilities'])
      } else {
        printLine(`no peer matches ${JSON.stringify(query)}`)
      }
      if (results.length === 0) throw new CliExit('', EXIT.notFound)
    })
}
