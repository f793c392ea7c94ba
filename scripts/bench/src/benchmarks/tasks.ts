/**
 * tasks: task round trip (delegate → completed, trivial handler) and remote tool calls, beside a
 * plain rpc request to an echo handler between the same two processes (the baseline).
 *
 * Worker process: `tasks.handle('bench-echo', input => input)`, `tools.register('bench_echo')`
 * (JSON Schema, validated), `handle('echo', body => body)`. Delegator process: `delegate(worker,
 * input, {capability})` then `tasks.result(id)`; `tools.call(worker, 'bench_echo', args)`;
 * `request(worker, 'echo', body)`. The same ~200-byte JSON body everywhere.
 *
 * A task is durable: the delegation, each status change and the result travel as signed
 * envelopes through the synced outbox/inbox on both sides; the baseline is one live request.
 * The worker's task-submission rate limit (default 50/s, burst 100) is raised for the
 * throughput phase, which measures the machinery, not the policy.
 */
import { figure } from '../lib/figure.js'
import type { PhaseParams, PhaseSamples } from '../lib/load.js'
import { runPhase } from '../lib/load.js'
import { loopbackAddr, startMeshNode } from '../lib/mesh.js'
import type { BenchContext, Benchmark, BenchResult, RoleFactory } from '../lib/registry.js'
import { round, summarize } from '../lib/stats.js'

const BODY = { text: 'summarize this: ' + 'lorem ipsum '.repeat(15) }
const CAPABILITY = 'bench-echo'
const TOOL = 'bench_echo'
/** A task not completed by then counts as failed (and is not timed). */
const TASK_TIMEOUT_MS = 5000

interface Config {
  warmup: number
  sequential: number
  inflightCount: number
  inflight: number
  rounds: number
  phaseCapMs: number
}

const FULL: Config = { warmup: 40, sequential: 200, inflightCount: 800, inflight: 16, rounds: 4, phaseCapMs: 16_000 }
const QUICK: Config = { warmup: 20, sequential: 80, inflightCount: 240, inflight: 16, rounds: 2, phaseCapMs: 8000 }

type Op = 'task' | 'tool' | 'rpc'

interface Measured extends PhaseSamples {
  serverCpuUs: number
}

function check (answer: unknown): void {
  if ((answer as { text?: string } | null)?.text !== BODY.text) throw new Error(`unexpected answer: ${JSON.stringify(answer).slice(0, 80)}`)
}

async function run (ctx: BenchContext): Promise<BenchResult> {
  const cfg = ctx.quick ? QUICK : FULL
  ctx.log('starting worker and delegator processes')
  const worker = await ctx.spawn('worker')
  const delegator = await ctx.spawn('delegator', { target: worker.ready.multiaddr, peerId: worker.ready.peerId })

  const phase = async (op: Op, params: PhaseParams): Promise<Measured> => {
    if (ctx.signal.aborted) throw new Error('interrupted')
    const before = await worker.usage()
    const samples = await delegator.call<PhaseSamples>('phase', { ...params, op }, params.maxMs + 60_000)
    const after = await worker.usage()
    return { ...samples, serverCpuUs: after.cpuUs - before.cpuUs }
  }

  ctx.log(`warm-up: ${cfg.warmup} of each, one at a time`)
  for (const op of ['rpc', 'tool', 'task'] as const) await phase(op, { count: cfg.warmup, maxMs: cfg.phaseCapMs })

  const seq: Record<Op, Measured[]> = { task: [], tool: [], rpc: [] }
  const par: Record<Op, Measured[]> = { task: [], tool: [], rpc: [] }
  const per = (n: number): number => Math.ceil(n / cfg.rounds)
  const cap = Math.ceil(cfg.phaseCapMs / cfg.rounds)
  for (let r = 0; r < cfg.rounds; r++) {
    const order: Op[] = r % 2 === 0 ? ['rpc', 'tool', 'task'] : ['task', 'tool', 'rpc']
    ctx.log(`round ${r + 1}/${cfg.rounds}: ${order.join(', ')}: ${per(cfg.sequential)} one at a time, ${per(cfg.inflightCount)} at ${cfg.inflight} in flight`)
    for (const op of order) seq[op].push(await phase(op, { count: per(cfg.sequential), maxMs: cap }))
    for (const op of order) par[op].push(await phase(op, { count: per(cfg.inflightCount), inflight: cfg.inflight, maxMs: cap }))
  }
  const state = await delegator.call<{ failed: number, tasks: number }>('state', {}, 10_000)

  const merge = (parts: Measured[]) => {
    const completed = parts.reduce((n, p) => n + p.completed, 0)
    const elapsedMs = parts.reduce((n, p) => n + p.elapsedMs, 0)
    const cpuUs = parts.reduce((n, p) => n + p.cpuUs + p.serverCpuUs, 0)
    const failed = parts.reduce((n, p) => n + (p.failed ?? 0), 0)
    return { completed, failed, elapsedMs, capped: parts.some(p => p.capped), rps: completed / (elapsedMs / 1000), summary: summarize(parts.flatMap(p => p.latencies)), cpuUsPerOp: cpuUs / completed }
  }
  const s = { task: merge(seq.task), tool: merge(seq.tool), rpc: merge(seq.rpc) }
  const p = { task: merge(par.task), tool: merge(par.tool), rpc: merge(par.rpc) }
  const p50s = (parts: Measured[]): number[] => parts.map(x => merge([x]).summary.p50)
  const rpss = (parts: Measured[]): number[] => parts.map(x => merge([x]).rps)
  const detail = (x: ReturnType<typeof merge>) => ({ completed: x.completed, failed: x.failed, elapsedMs: round(x.elapsedMs), capped: x.capped, rps: round(x.rps), cpuUsPerOp: round(x.cpuUsPerOp), latencyMs: Object.fromEntries(Object.entries(x.summary).map(([k, v]) => [k, round(v)])) })
  const notes: string[] = []
  if (Object.values(s).some(x => x.capped) || Object.values(p).some(x => x.capped)) notes.push('a phase hit its time cap; fewer operations than configured were measured')
  for (const [label, x] of [['tasks one at a time', s.task], ['tasks in flight', p.task], ['tool calls one at a time', s.tool], ['tool calls in flight', p.tool], ['rpc one at a time', s.rpc], ['rpc in flight', p.rpc]] as const) {
    if (x.failed > 0) notes.push(`${label}: ${x.failed} of ${x.failed + x.completed} did not complete (tasks: within ${TASK_TIMEOUT_MS} ms); only completed ones are timed, throughput counts completed ones`)
  }

  return {
    title: 'task round trip (delegate → completed, trivial handler) and remote tool call, two processes on 127.0.0.1',
    baseline: 'a plain mesh rpc request to an echo handler between the same two processes, same body, measured in the same rounds (ABBA)',
    config: { ...cfg, bodyBytes: JSON.stringify(BODY).length, taskRateLimit: 'raised to 100000/s (default 50/s, burst 100)', handlerMaxConcurrent: 256 },
    figures: {
      task_p50_ms: figure({ label: 'task round trip, one at a time, p50', unit: 'ms', better: 'lower', value: s.task.summary.p50, baseline: s.rpc.summary.p50, roundValues: p50s(seq.task), roundBaselines: p50s(seq.rpc) }),
      task_p95_ms: figure({ label: 'task round trip, one at a time, p95', unit: 'ms', better: 'lower', value: s.task.summary.p95, baseline: s.rpc.summary.p95 }),
      task_rps: figure({ label: `task throughput, ${cfg.inflight} in flight`, unit: 'tasks/s', better: 'higher', value: p.task.rps, baseline: p.rpc.rps, roundValues: rpss(par.task), roundBaselines: rpss(par.rpc) }),
      task_inflight_p50_ms: figure({ label: `task round trip, ${cfg.inflight} in flight, p50`, unit: 'ms', better: 'lower', value: p.task.summary.p50, baseline: p.rpc.summary.p50 }),
      task_cpu_us: figure({ label: 'task CPU per operation, both processes (one at a time)', unit: 'µs', better: 'lower', value: s.task.cpuUsPerOp, baseline: s.rpc.cpuUsPerOp }),
      tool_p50_ms: figure({ label: 'remote tool call (schema-validated), p50', unit: 'ms', better: 'lower', value: s.tool.summary.p50, baseline: s.rpc.summary.p50, roundValues: p50s(seq.tool), roundBaselines: p50s(seq.rpc) }),
      tool_p95_ms: figure({ label: 'remote tool call, p95', unit: 'ms', better: 'lower', value: s.tool.summary.p95, baseline: s.rpc.summary.p95 }),
      tool_rps: figure({ label: `tool call throughput, ${cfg.inflight} in flight`, unit: 'calls/s', better: 'higher', value: p.tool.rps, baseline: p.rpc.rps }),
      tool_cpu_us: figure({ label: 'tool call CPU per operation, both processes (one at a time)', unit: 'µs', better: 'lower', value: s.tool.cpuUsPerOp, baseline: s.rpc.cpuUsPerOp })
    },
    details: {
      sequential: { task: detail(s.task), tool: detail(s.tool), rpc: detail(s.rpc) },
      inflight: { task: detail(p.task), tool: detail(p.tool), rpc: detail(p.rpc) },
      delegatorTasks: state
    },
    notes: ['placement: one worker process (one node) and one delegator process (one node)', ...notes]
  }
}

export const benchmark: Benchmark = {
  name: 'tasks',
  description: 'task round trip and tool call vs a plain rpc request',
  run
}

export const roles: Record<string, RoleFactory> = {
  worker: async () => {
    const { node, close } = await startMeshNode('bench-worker', {
      card: { description: 'bench worker', capabilities: [{ name: CAPABILITY }] },
      policy: { rateLimits: { tasks: { rate: 100_000, burst: 100_000 } } }
    })
    node.handle('echo', body => body, { maxConcurrent: 256 })
    node.tasks.handle(CAPABILITY, input => input, { maxConcurrent: 256 })
    await node.tools.register(TOOL, {
      description: 'echoes its arguments',
      inputSchema: { type: 'object', properties: { text: { type: 'string' } }, required: ['text'], additionalProperties: false },
      handler: args => args
    })
    return { ready: { multiaddr: loopbackAddr(node.multiaddrs), peerId: node.peerId }, methods: {}, close }
  },

  delegator: async (args: { target: string, peerId: string }) => {
    const { node, close } = await startMeshNode('bench-delegator')
    await node.dial(args.target)
    // the worker's card (fetched on connect) tells us its tools; wait for it, bounded
    for (let i = 0; i < 200 && !(await node.cards()).some(c => c.peerId === args.peerId); i++) await new Promise(resolve => setTimeout(resolve, 25))
    let failed = 0
    const ops: Record<Op, () => Promise<void>> = {
      rpc: async () => { check(await node.request(args.peerId, 'echo', BODY)) },
      tool: async () => { check(await node.tools.call(args.peerId, TOOL, BODY)) },
      task: async () => {
        const info = await node.delegate(args.peerId, BODY, { capability: CAPABILITY, timeout: 60_000 })
        check(await node.tasks.result(info.id, { timeout: TASK_TIMEOUT_MS }))
      }
    }
    // a task that does not complete in time is counted, not timed, and the phase goes on
    const tolerant = (op: () => Promise<void>) => async (): Promise<boolean> => {
      try {
        await op()
        return true
      } catch (err) {
        failed++
        if (failed <= 3) process.stderr.write(`operation failed: ${(err as Error).message}\n`)
        return false
      }
    }
    return {
      methods: {
        phase: async (params: PhaseParams & { op: Op }) => {
          const before = failed
          const s = await runPhase(tolerant(ops[params.op]), params)
          return { ...s, failed: failed - before }
        },
        state: async () => ({ failed, tasks: (await node.tasks.list({ direction: 'outgoing', limit: 10_000 })).length })
      },
      close
    }
  }
}
