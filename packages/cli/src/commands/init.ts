import { loadOrCreateIdentity, personaDir } from '@persona-mesh/node'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { printJson, printLine } from '../output.js'
import { globals } from './common.js'
import type { Command } from 'commander'

export function registerInit (program: Command): void {
  program
    .command('init')
    .description('create the persona\'s identity (an Ed25519 key) and print its PeerId')
    .addHelpText('after', '\nExample:\n  pmesh init --name aria')
    .action(async (_opts, command: Command) => {
      const { name, home, json } = globals(command)
      const dataDir = personaDir(home, name)
      const { privateKey, created } = await loadOrCreateIdentity(dataDir)
      const peerId = peerIdFromPrivateKey(privateKey).toString()
      if (json === true) {
        printJson({ peerId, name, dataDir, created })
      } else {
        printLine(peerId)
        process.stderr.write(`${created ? 'created' : 'existing'} identity for persona ${name} in ${dataDir}\n`)
      }
    })
}
