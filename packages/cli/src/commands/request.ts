import { printJson } from '../output.js'
import { parseJsonArg, positiveInt, withMesh } from './common.js'
import type { Command } from 'commander'

export function registerRequest (program: Command): void {
  program
    .command('request')
    .description('send a live request to a peer and print its answer (not queued: fails fast if the peer is away)')
    .argument('<peer>', 'PeerId or multiaddr of the peer')
    .argument('<method>', 'method name the peer handles, e.g. mesh.echo')
    .option('--body <json>', 'request body as JSON', 'null')
    .option('--timeout <ms>', 'how long to wait for the answer', positiveInt)
    .addHelpText('after', '\nExample:\n  pmesh request --name aria 12D3KooW... mesh.echo --body \'{"hello":"kira"}\'')
    .action(async (peer: string, method: string, opts: { body: string, timeout?: number }, command: Command) => {
      const body = parseJsonArg(opts.body, '--body')
      const answer = await withMesh(command, async mesh => mesh.request(peer, method, body, opts.timeout !== undefined ? { timeout: opts.timeout } : {}))
      printJson(answer)
    })
}
