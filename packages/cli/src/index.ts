/**
 * @packageDocumentation
 *
 * `pmesh`, the Persona Mesh command line. Parses arguments, calls a `Mesh`, prints. No mesh logic.
 */
import { Command, CommanderError } from 'commander'
import { registerInit } from './commands/init.js'
import { registerMcp } from './commands/mcp.js'
import { registerMessages } from './commands/messages.js'
import { registerPeers } from './commands/peers.js'
import { registerRequest } from './commands/request.js'
import { registerStart } from './commands/start.js'
import { registerStatus } from './commands/status.js'
import { registerTasks } from './commands/tasks.js'
import { EXIT, exitCodeFor } from './output.js'

export { EXIT } from './output.js'

export function createProgram (): Command {
  const program = new Command('pmesh')
    .description('Persona Mesh: a peer-to-peer mesh for AI agents')
    .option('--name <name>', 'persona name (env PMESH_NAME; default "default")')
    .option('--home <dir>', 'where personas keep their data (env PMESH_HOME; default ~/.persona-mesh)')
    .option('--json', 'machine-readable output')
    .showHelpAfterError()
    .exitOverride()
  registerInit(program)
  registerStart(program)
  registerStatus(program)
  registerRequest(program)
  registerPeers(program)
  registerMessages(program)
  registerMcp(program)
  registerTasks(program)
  return program
}

/** Run `pmesh` with `argv` (without node and script); resolves with the exit code. */
export async function main (argv: string[]): Promise<number> {
  const program = createProgram()
  try {
    await program.parseAsync(argv, { from: 'user' })
    return EXIT.ok
  } catch (err) {
    if (err instanceof CommanderError) {
      // commander already printed usage or help
      return err.exitCode === 0 ? EXIT.ok : EXIT.usage
    }
    const message = (err as Error)?.message ?? String(err)
    if (message !== '') process.stderr.write(`pmesh: ${message}\n`)
    return exitCodeFor(err)
  }
}
