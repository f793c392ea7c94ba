import { InvalidArgumentError } from '@persona-mesh/node'
import { CliExit, EXIT, printJson, printLine, printTable, safeText, withProgress } from '../output.js'
import { globals, parseJsonArg, positiveInt, withMesh } from './common.js'
import type { Command } from 'commander'
import type { RemoteMesh, TaskInfo, TraceReport } from '@persona-mesh/node'
import type { JsonValue, Priority, TaskTree } from '@persona-mesh/protocol'

/** INPUT is JSON when it parses as JSON, else plain text sent as `{ "text": INPUT }`. */
function inputOf (text: string): JsonValue {
  try {
    return JSON.parse(text) as JsonValue
  } catch {
    return { text }
  }
}

async function names (mesh: RemoteMesh): Promise<Map<string, string>> {
  const peers = await mesh.peers()
  return new Map([[mesh.peerId, mesh.name], ...peers.filter(p => p.name !== undefined).map(p => [p.peerId, p.name!] as [string, string])])
}

function printTask (task: TaskInfo, who: Map<string, string>): void {
  const peer = who.get(task.peer) ?? task.peer
  printLine(`task      ${task.id} (${task.direction === 'outgoing' ? `to ${peer}` : `from ${peer}`})`)
  printLine(`status    ${task.status}${task.progress !== undefined ? ` ${task.progress}%` : ''}${task.message !== undefined ? ` — ${safeText(task.message)}` : ''}`)
  printLine(`capability ${task.capability}, deadline ${new Date(task.deadline).toISOString()}`)
  printLine(`input     ${safeText(task.input)}`)
  if (task.result !== undefined) printLine(`result    ${safeText(task.result, 2000)}`)
  if (task.error !== undefined) printLine(`error     ${task.error.reason !== undefined ? `${task.error.reason}: ` : ''}${safeText(task.error.message)}`)
  for (const step of task.history) {
    printLine(`  ${new Date(step.at).toISOString().slice(11, 23)} ${step.status}${step.progress !== undefined ? ` ${step.progress}%` : ''}${step.message !== undefined ? ` ${safeText(step.message)}` : ''}`)
  }
}

export function registerTasks (program: Command): void {
  program
    .command('delegate')
    .description('ask a peer (or any peer with a capability) to do a task; durable: waits for an offline worker')
    .argument('<peer-or-input>', 'persona name or PeerId, then the input; with --capability alone, just the input')
    .argument('[input]', 'task input: JSON, or text sent as {"text": …}')
    .option('--capability <name>', 'the capability to ask for')
    .option('--timeout <seconds>', 'deadline from now (default 1 hour)', positiveInt)
    .option('--priority <p>', 'low, normal or high', 'normal')
    .option('--wait [seconds]', 'wait for the result (default: until the deadline); exit 4 on timeout, 1 if it failed')
    .addHelpText('after', '\nExamples:\n  pmesh delegate --name coordinator --capability review \'{"text":"fn main() {}"}\' --wait\n  pmesh delegate --name coordinator kira "check this diff" --capability analyze_code')
    .action(async (first: string, second: string | undefined, opts: { capability?: string, timeout?: number, priority: string, wait?: string | boolean }, command: Command) => {
      const { json } = globals(command)
      const [peer, input] = second === undefined ? [undefined, first] : [first, second]
      if (input === undefined) throw new InvalidArgumentError('give the task input')
      if (peer === undefined && opts.capability === undefined) throw new InvalidArgumentError('give a peer or --capability')
      if (!['low', 'normal', 'high'].includes(opts.priority)) throw new InvalidArgumentError('--priority is low, normal or high')
      await withMesh(command, async (mesh) => {
        const target = peer !== undefined ? peer : { capability: opts.capability! }
        let task = await mesh.delegate(target, inputOf(input), {
          priority: opts.priority as Priority,
          ...(peer !== undefined && opts.capability !== undefined ? { capability: opts.capability } : {}),
          ...(opts.timeout !== undefined ? { timeout: opts.timeout * 1000 } : {})
        })
        if (opts.wait !== undefined && opts.wait !== false) {
          const seconds = opts.wait === true ? Math.max(1, Math.ceil((task.deadline - Date.now()) / 1000)) : positiveInt(opts.wait)
          const onUpdate = (evt: CustomEvent<TaskInfo>): void => {
            if (evt.detail.id === task.id && evt.detail.progress !== undefined && json !== true && process.stderr.isTTY === true) {
              process.stderr.write(`\r${evt.detail.status} ${evt.detail.progress}% ${safeText(evt.detail.message ?? '', 60)}\x1b[K`)
            }
          }
          mesh.addEventListener('task:update', onUpdate)
          try {
            task = await withProgress('waiting for the task', mesh.tasks.wait(task.id, { timeout: seconds * 1000 }))
          } catch (err) {
            if ((err as Error).name === 'TimeoutError') throw new CliExit(`task ${task.id} not finished after ${seconds}s (pmesh task ${task.id} to follow it)`, EXIT.timeout)
            throw err
          } finally {
            mesh.removeEventListener('task:update', onUpdate)
          }
        }
        if (json === true) printJson(task)
        else if (opts.wait !== undefined && opts.wait !== false) printTask(task, await names(mesh))
        else printLine(`${task.id} ${task.status} (to ${(await names(mesh)).get(task.peer) ?? task.peer})`)
        if (['failed', 'rejected', 'canceled', 'expired'].includes(task.status)) throw new CliExit('', EXIT.error)
      })
    })

  program
    .command('tasks')
    .description('list tasks we delegated (outgoing) and received (incoming)')
    .option('--incoming', 'only tasks we received')
    .option('--outgoing', 'only tasks we delegated')
    .option('--limit <n>', 'most tasks', positiveInt, 50)
    .addHelpText('after', '\nExample:\n  pmesh tasks --name kira --incoming')
    .action(async (opts: { incoming?: boolean, outgoing?: boolean, limit: number }, command: Command) => {
      const { json } = globals(command)
      if (opts.incoming === true && opts.outgoing === true) throw new InvalidArgumentError('--incoming or --outgoing, not both')
      await withMesh(command, async (mesh) => {
        const direction = opts.incoming === true ? 'incoming' : opts.outgoing === true ? 'outgoing' : undefined
        const tasks = await mesh.tasks.list({ limit: opts.limit, ...(direction !== undefined ? { direction } : {}) })
        if (json === true) {
          printJson(tasks)
          return
        }
        if (tasks.length === 0) {
          printLine('no tasks')
          return
        }
        const who = await names(mesh)
        printTable(tasks.map(t => ({
          id: t.id,
          dir: t.direction === 'outgoing' ? 'out' : 'in',
          peer: who.get(t.peer) ?? `${t.peer.slice(0, 12)}…`,
          capability: t.capability,
          status: t.status,
          progress: t.progress !== undefined ? `${t.progress}%` : '',
          updated: new Date(t.updatedAt).toISOString().slice(11, 19)
        })), ['id', 'dir', 'peer', 'capability', 'status', 'progress', 'updated'])
      })
    })

  const task = program
    .command('task')
    .description('show one task, or update a task we received (the agent as worker)')
    .argument('<id>', 'task id')
    .addHelpText('after', '\nExamples:\n  pmesh task --name coordinator 01JD…\n  pmesh task update --name kira 01JD… --status completed --result \'{"verdict":"ok"}\'')
    .action(async (id: string, _opts, command: Command) => {
      const { json } = globals(command)
      await withMesh(command, async (mesh) => {
        const info = await mesh.tasks.get(id)
        if (info === undefined) throw new CliExit(`no task ${id}`, EXIT.notFound)
        if (json === true) printJson(info)
        else printTask(info, await names(mesh))
      })
    })

  task
    .command('update')
    .description('accept, report progress on, complete, fail or reject a task we received')
    .argument('<id>', 'task id')
    .requiredOption('--status <status>', 'accepted, working, completed, failed or rejected')
    .option('--progress <percent>', '0-100')
    .option('--message <text>', 'a note for the delegator')
    .option('--result <json>', 'the result (with --status completed)')
    .action(async (id: string, opts: { status: string, progress?: string, message?: string, result?: string }, command: Command) => {
      const { json } = globals(command)
      if (!['accepted', 'working', 'completed', 'failed', 'rejected'].includes(opts.status)) throw new InvalidArgumentError('--status is accepted, working, completed, failed or rejected')
      const progress = opts.progress !== undefined ? Number(opts.progress) : undefined
      if (progress !== undefined && !(progress >= 0 && progress <= 100)) throw new InvalidArgumentError('--progress is 0-100')
      const info = await withMesh(command, async mesh => mesh.tasks.update(id, {
        status: opts.status as 'completed',
        ...(progress !== undefined ? { progress } : {}),
        ...(opts.message !== undefined ? { message: opts.message } : {}),
        ...(opts.result !== undefined ? { result: parseJsonArg(opts.result, '--result') } : {})
      }))
      if (json === true) printJson(info)
      else printLine(`${info.id} ${info.status}`)
    })

  program
    .command('cancel')
    .description('cancel a task we delegated (ends at once if it never reached the worker; otherwise the worker confirms)')
    .argument('<id>', 'task id')
    .action(async (id: string, _opts, command: Command) => {
      const { json } = globals(command)
      const info = await withMesh(command, async mesh => mesh.tasks.cancel(id))
      if (json === true) printJson(info)
      else printLine(`${info.id} ${info.status}${info.message !== undefined ? ` (${info.message})` : ''}`)
    })

  program
    .command('tools')
    .description('list the tools a peer offers (from its verified card), or ours')
    .argument('[peer]', 'persona name or PeerId')
    .action(async (peer: string | undefined, _opts, command: Command) => {
      const { json } = globals(command)
      const tools = await withMesh(command, async mesh => mesh.tools.list(peer))
      if (json === true) {
        printJson(tools)
        return
      }
      if (tools.length === 0) {
        printLine('no tools')
        return
      }
      for (const tool of tools) {
        printLine(`${tool.name} — ${safeText(tool.description)}`)
        printLine(`  input: ${safeText(tool.inputSchema, 400)}`)
      }
    })

  program
    .command('call')
    .description('run a peer\'s tool (live: fails fast if the peer is away); the peer validates the arguments')
    .argument('<peer>', 'persona name or PeerId')
    .argument('<tool>', 'tool name')
    .option('--args <json>', 'arguments as JSON', '{}')
    .option('--timeout <ms>', 'how long to wait', positiveInt)
    .addHelpText('after', '\nExample:\n  pmesh call --name coordinator kira analyze_code --args \'{"code":"let x = 1"}\'')
    .action(async (peer: string, tool: string, opts: { args: string, timeout?: number }, command: Command) => {
      const args = parseJsonArg(opts.args, '--args')
      const result = await withMesh(command, async mesh => mesh.tools.call(peer, tool, args, opts.timeout !== undefined ? { timeout: opts.timeout } : {}))
      printJson(result)
    })

  program
    .command('trace')
    .description('show the chain of a delegation across peers, as this persona knows it')
    .argument('<id>', 'task id or 32-hex trace id')
    .action(async (id: string, _opts, command: Command) => {
      const { json } = globals(command)
      await withMesh(command, async (mesh) => {
        const report: TraceReport = await mesh.trace(id)
        if (json === true) {
          printJson(report)
          return
        }
        const who = await names(mesh)
        printLine(`trace ${report.traceId}`)
        const draw = (node: TaskTree, prefix: string, last: boolean): void => {
          printLine(`${prefix}${last ? '└─' : '├─'} ${node.capability} → ${who.get(node.peer) ?? node.peer.slice(0, 16)}  ${node.status}  (${node.taskId})`)
          node.children.forEach((child, i) => { draw(child, `${prefix}${last ? '   ' : '│  '}`, i === node.children.length - 1) })
        }
        report.tasks.forEach((root, i) => { draw(root, '', i === report.tasks.length - 1) })
        if (report.events.length > 0) {
          printLine('')
          printLine('events here:')
          for (const e of report.events) {
            printLine(`  ${new Date(e.at).toISOString().slice(11, 23)} ${e.kind} ${e.outcome}${e.peer !== undefined ? ` ${who.get(e.peer) ?? e.peer.slice(0, 16)}` : ''}`)
          }
        }
      })
    })

  const policy = program
    .command('policy')
    .description('who may talk to this persona: show, allow PEER, deny PEER, mode open|allowlist')
  policy.command('show').description('print the policy').action(async (_opts, command: Command) => {
    printJson(await withMesh(command, async mesh => mesh.policy.get()))
  })
  policy.command('allow').description('add a peer to the allowlist (saved in config.json)').argument('<peer>', 'persona name or PeerId')
    .action(async (peer: string, _opts, command: Command) => { printJson(await withMesh(command, async mesh => mesh.policy.allow(peer))) })
  policy.command('deny').description('refuse a peer (saved in config.json)').argument('<peer>', 'persona name or PeerId')
    .action(async (peer: string, _opts, command: Command) => { printJson(await withMesh(command, async mesh => mesh.policy.deny(peer))) })
  policy.command('mode').description('open (any peer) or allowlist').argument('<mode>', 'open or allowlist')
    .action(async (mode: string, _opts, command: Command) => {
      if (mode !== 'open' && mode !== 'allowlist') throw new InvalidArgumentError('mode is open or allowlist')
      printJson(await withMesh(command, async mesh => mesh.policy.mode(mode)))
    })
}
