import { printJson, printLine } from '../output.js'
import { globals, withMesh } from './common.js'
import type { Command } from 'commander'

export function registerStatus (program: Command): void {
  program
    .command('status')
    .description('show the running node of the persona: PeerId, addresses, connections')
    .addHelpText('after', '\nExit code 3 when no node runs for the persona.\n\nExample:\n  pmesh status --name aria --json')
    .action(async (_opts, command: Command) => {
      const { json } = globals(command)
      const status = await withMesh(command, async mesh => mesh.status())
      if (json === true) {
        printJson(status)
        return
      }
      printLine(`persona   ${status.name}`)
      printLine(`peer id   ${status.peerId}`)
      printLine(`running   ${status.running ? `yes, since ${new Date(status.startedAt).toISOString()}` : 'no'}`)
      printLine(`peers     ${status.peers.length} connected`)
      printLine(`inbox     ${status.inbox.unread} unread${status.inbox.quarantined > 0 ? `, ${status.inbox.quarantined} in quarantine` : ''}`)
      printLine(`outbox    ${status.outbox.queued} queued`)
      if (status.topics.length > 0) printLine(`topics    ${status.topics.join(', ')}`)
      for (const addr of status.multiaddrs) printLine(`listening ${addr}`)
    })
}
