import { join } from 'node:path'
import { CONTROL_SOCKET, createMeshNode, loadConfig, parseCapabilityFlag, personaDir, serveControl, type ControlServer } from '@persona-mesh/node'
import { printJson } from '../output.js'
import { collect, globals } from './common.js'
import type { Command } from 'commander'

interface StartOptions {
  listen?: string[]
  bootstrap?: string[]
  mdns: boolean
  description?: string
  capability?: string[]
}

export function registerStart (program: Command): void {
  program
    .command('start')
    .description('run the persona\'s node in the foreground and serve it to pmesh commands on its control socket')
    .option('--listen <multiaddr>', 'address to listen on (repeatable; default /ip4/0.0.0.0/tcp/0)', collect)
    .option('--bootstrap <multiaddr>', 'peer to join through, ending in /p2p/<PeerId> (repeatable)', collect)
    .option('--no-mdns', 'do not discover peers on the local network with mDNS')
    .option('--description <text>', 'what this persona does (overrides config.json for this run)')
    .option('--capability <name[:tag,tag]>', 'a capability for the card (repeatable; overrides config.json for this run)', collect)
    .addHelpText('after', '\nPrints one JSON line {"peerId","name","multiaddrs"} on stdout once listening; logs go to stderr.\n\nExample:\n  pmesh start --name aria --listen /ip4/127.0.0.1/tcp/4001 --no-mdns')
    .action(async (opts: StartOptions, command: Command) => {
      const { name, home } = globals(command)
      const config = await loadConfig(personaDir(home, name))
      const card = {
        ...config.card,
        ...(opts.description !== undefined ? { description: opts.description } : {}),
        ...(opts.capability !== undefined ? { capabilities: opts.capability.map(parseCapabilityFlag) } : {})
      }
      const node = await createMeshNode({
        name,
        home,
        card,
        // --no-mdns always wins; otherwise config.json may turn it off
        mdns: opts.mdns && config.mdns !== false,
        ...(opts.listen !== undefined ? { listen: opts.listen } : {}),
        ...(opts.bootstrap !== undefined ? { bootstrap: opts.bootstrap } : {})
      })
      let control: ControlServer
      try {
        control = await serveControl(node, join(node.dataDir, CONTROL_SOCKET))
      } catch (err) {
        await node.stop()
        throw err
      }
      printJson({ peerId: node.peerId, name: node.name, multiaddrs: node.multiaddrs })
      process.stderr.write(`persona ${node.name} running as ${node.peerId}; Ctrl-C to stop\n`)

      await new Promise<void>((resolve) => {
        const stop = (): void => { resolve() }
        process.once('SIGINT', stop)
        process.once('SIGTERM', stop)
      })
      process.stderr.write(`stopping persona ${node.name}\n`)
      const forced = setTimeout(() => { process.exit(1) }, 10_000)
      forced.unref()
      await control.close()
      await node.stop()
    })
}
