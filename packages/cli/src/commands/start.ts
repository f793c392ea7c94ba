import { join } from 'node:path'
import { CONTROL_SOCKET, createMeshNode, serveControl, type ControlServer } from '@persona-mesh/node'
import { printJson } from '../output.js'
import { collect, globals } from './common.js'
import type { Command } from 'commander'

interface StartOptions {
  listen?: string[]
  bootstrap?: string[]
  mdns: boolean
}

export function registerStart (program: Command): void {
  program
    .command('start')
    .description('run the persona\'s node in the foreground and serve it to pmesh commands on its control socket')
    .option('--listen <multiaddr>', 'address to listen on (repeatable; default /ip4/0.0.0.0/tcp/0)', collect)
    .option('--bootstrap <multiaddr>', 'peer to join through, ending in /p2p/<PeerId> (repeatable)', collect)
    .option('--no-mdns', 'do not discover peers on the local network with mDNS')
    .addHelpText('after', '\nPrints one JSON line {"peerId","name","multiaddrs"} on stdout once listening; logs go to stderr.\n\nExample:\n  pmesh start --name aria --listen /ip4/127.0.0.1/tcp/4001 --no-mdns')
    .action(async (opts: StartOptions, command: Command) => {
      const { name, home } = globals(command)
      const node = await createMeshNode({
        name,
        home,
        mdns: opts.mdns,
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
