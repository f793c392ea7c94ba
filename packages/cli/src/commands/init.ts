import { loadConfig, loadOrCreateIdentity, parseCapabilityFlag, personaDir, saveConfig } from '@persona-mesh/node'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { printJson, printLine } from '../output.js'
import { collect, globals } from './common.js'
import type { Command } from 'commander'

export function registerInit (program: Command): void {
  program
    .command('init')
    .description('create the persona\'s identity (an Ed25519 key) and print its PeerId')
    .option('--description <text>', 'what this persona does, for its card')
    .option('--capability <name[:tag,tag]>', 'a capability for its card (repeatable)', collect)
    .addHelpText('after', '\nThe card settings are saved in <home>/<name>/config.json and used by `pmesh start`.\n\nExample:\n  pmesh init --name kira --description "code analyst" --capability analyze_code:typescript,security --capability review')
    .action(async (opts: { description?: string, capability?: string[] }, command: Command) => {
      const { name, home, json } = globals(command)
      const dataDir = personaDir(home, name)
      const { privateKey, created } = await loadOrCreateIdentity(dataDir)
      if (opts.description !== undefined || opts.capability !== undefined) {
        const config = await loadConfig(dataDir)
        config.card = {
          ...config.card,
          ...(opts.description !== undefined ? { description: opts.description } : {}),
          ...(opts.capability !== undefined ? { capabilities: opts.capability.map(parseCapabilityFlag) } : {})
        }
        await saveConfig(dataDir, config)
      }
      const peerId = peerIdFromPrivateKey(privateKey).toString()
      if (json === true) {
        printJson({ peerId, name, dataDir, created })
      } else {
        printLine(peerId)
        process.stderr.write(`${created ? 'created' : 'existing'} identity for persona ${name} in ${dataDir}\n`)
      }
    })
}
