import { createMcpServer, StdioServerTransport } from '@persona-mesh/mcp'
import { connectMesh, createMeshNode } from '@persona-mesh/node'
import { CliExit, EXIT } from '../output.js'
import { collect, globals } from './common.js'
import type { Command } from 'commander'
import type { Mesh, MeshNode, RemoteMesh } from '@persona-mesh/node'

interface McpOptions {
  channel?: boolean
  mdns: boolean
  listen?: string[]
  bootstrap?: string[]
}

/** How often to check that the parent (the MCP client) and, when attached, the daemon are still there. */
const WATCH_INTERVAL_MS = 2000
/** After this long shutting down, exit anyway. */
const FORCED_EXIT_MS = 10_000

function say (line: string): void {
  process.stderr.write(`pmesh mcp: ${line}\n`)
}

export function registerMcp (program: Command): void {
  program
    .command('mcp')
    .description('serve the persona to an MCP client (Claude Code, …) over stdio: attaches to its running daemon, else runs an embedded node')
    .option('--channel', 'push a pointer to each new message as the experimental claude/channel notification (Claude Code)')
    .option('--no-mdns', 'embedded node: do not discover peers on the local network with mDNS')
    .option('--listen <multiaddr>', 'embedded node: address to listen on (repeatable; default from config.json, else /ip4/0.0.0.0/tcp/0)', collect)
    .option('--bootstrap <multiaddr>', 'embedded node: peer to join through, ending in /p2p/<PeerId> (repeatable)', collect)
    .addHelpText('after', [
      '',
      'stdout carries only the MCP protocol; diagnostics go to stderr. Exits when stdin closes,',
      'on SIGINT/SIGTERM, when the parent process goes away, or when the daemon it attached to stops.',
      '',
      'Examples:',
      '  claude mcp add mesh -- pmesh mcp --name aria',
      '  pmesh mcp --name aria --no-mdns --bootstrap /ip4/192.168.1.20/tcp/4001/p2p/12D3KooW…'
    ].join('\n'))
    .action(async (opts: McpOptions, command: Command) => {
      // read before anything slow: a parent that dies while the node starts must still be noticed
      const parent = process.ppid
      const { name, home } = globals(command)
      let mesh: Mesh
      let node: MeshNode | undefined
      let remote: RemoteMesh | undefined
      try {
        remote = await connectMesh({ name, home })
        mesh = remote
        say(`attached to the running node of persona ${name} (${remote.peerId})`)
      } catch (err) {
        if ((err as Error).name !== 'NoDaemonError') throw err
        node = await createMeshNode({
          name,
          home,
          // --no-mdns always wins; otherwise config.json decides (default on)
          ...(opts.mdns ? {} : { mdns: false }),
          ...(opts.listen !== undefined ? { listen: opts.listen } : {}),
          ...(opts.bootstrap !== undefined ? { bootstrap: opts.bootstrap } : {})
        })
        mesh = node
        say(`no daemon running: started an embedded node for persona ${name} (${node.peerId}) on ${node.multiaddrs.join(', ')}`)
      }

      const server = createMcpServer(mesh, { channel: opts.channel === true, log: say })
      const transport = new StdioServerTransport()
      const ended = Promise.withResolvers<{ reason: string, code: number }>()
      const end = (reason: string, code: number = EXIT.ok): void => { ended.resolve({ reason, code }) }

      transport.onclose = () => { end('transport closed') }
      process.stdin.once('end', () => { end('stdin closed') })
      process.stdin.once('close', () => { end('stdin closed') })
      // the client went away mid-write: nobody is listening any more
      process.stdout.on('error', () => { end('stdout closed') })
      const onSignal = (signal: string) => (): void => { end(`got ${signal}`) }
      const onInt = onSignal('SIGINT')
      const onTerm = onSignal('SIGTERM')
      process.once('SIGINT', onInt)
      process.once('SIGTERM', onTerm)

      // no ghost servers: the parent (the MCP client) died without closing our stdin
      const watch = setInterval(() => {
        if (process.ppid !== parent) end(`parent process ${parent} went away`)
      }, WATCH_INTERVAL_MS)
      void remote?.closed.then((err) => {
        // calls in flight fail at the same moment; give their error results a moment to reach the client
        setTimeout(() => {
          end(`lost the node of persona ${name}: ${err.message}; start it again with: pmesh start --name ${name}`, EXIT.error)
        }, 500).unref()
      })

      try {
        await server.connect(transport)
        const { reason, code } = await ended.promise
        if (code === EXIT.ok) say(`${reason}; stopping`)
        const forced = setTimeout(() => { process.exit(code === EXIT.ok ? EXIT.error : code) }, FORCED_EXIT_MS)
        forced.unref()
        if (code !== EXIT.ok) throw new CliExit(`mcp: ${reason}`, code)
      } finally {
        clearInterval(watch)
        process.off('SIGINT', onInt)
        process.off('SIGTERM', onTerm)
        await server.close().catch(() => {})
        remote?.close()
        await node?.stop()
        process.stdin.destroy()
      }
    })
}
