import { logger } from '@libp2p/logger'
import { Ajv } from 'ajv'
import { z } from 'zod'
import { CapabilityNameSchema, NackError, TOOL_CALL_METHOD, ToolCallRequestSchema } from '@persona-mesh/protocol'
import { DuplicateHandlerError, InvalidArgumentError, NotFoundError } from '../errors.js'
import type { RequestOptions, RpcContext } from '../rpc/index.js'
import type { Verdict } from '../policy/policy.js'
import type { JsonValue, ToolSpec } from '@persona-mesh/protocol'

const log = logger('persona-mesh:tools')

/** A schema for tool arguments or results: a zod schema, or a JSON Schema object. */
export type ToolSchema = z.ZodType | { [key: string]: JsonValue }

export interface ToolContext {
  /** The caller's PeerId (authenticated by the connection). */
  from: string
  signal: AbortSignal
}

export interface ToolDefinition {
  description?: string
  inputSchema: ToolSchema
  outputSchema?: ToolSchema
  handler: (args: any, context: ToolContext) => JsonValue | Promise<JsonValue>
  /** Longest a call may run. @default 30000 */
  timeout?: number
}

interface Registered {
  spec: ToolSpec
  validateInput: (value: unknown) => string | undefined
  validateOutput?: (value: unknown) => string | undefined
  definition: ToolDefinition
}

export interface ToolServiceHooks {
  /** Policy: may `peer` call `tool`? */
  authorize: (peer: string, tool: string) => Verdict
  /** The advertised tool list changed: put it on the card. */
  advertise: (tools: ToolSpec[]) => Promise<void>
  /** Audit one call. */
  audit: (event: { peer: string, tool: string, outcome: string, detail?: string }) => void
  request: (peer: string, method: string, body: JsonValue, options?: RequestOptions) => Promise<JsonValue>
}

const ajv = new Ajv({ allErrors: false, strict: false })

function isZod (schema: ToolSchema): schema is z.ZodType {
  return typeof (schema as { safeParse?: unknown }).safeParse === 'function'
}

/** A validator returning the first problem as text, or undefined when the value fits. */
function compile (schema: ToolSchema, what: string): (value: unknown) => string | undefined {
  if (isZod(schema)) {
    return (value) => {
      const parsed = schema.safeParse(value)
      if (parsed.success) return undefined
      const issue = parsed.error.issues[0]
      return `${issue?.path.length ? issue.path.join('.') : what}: ${issue?.message ?? 'invalid'}`
    }
  }
  let validate: ReturnType<typeof ajv.compile>
  try {
    validate = ajv.compile(schema)
  } catch (err) {
    throw new InvalidArgumentError(`${what} is not a valid JSON Schema: ${(err as Error).message}`)
  }
  return (value) => {
    if (validate(value)) return undefined
    const error = validate.errors?.[0]
    return `${error?.instancePath !== undefined && error.instancePath !== '' ? error.instancePath : what} ${error?.message ?? 'is invalid'}`
  }
}

function toJsonSchema (schema: ToolSchema): { [key: string]: JsonValue } {
  return isZod(schema) ? z.toJSONSchema(schema, { unrepresentable: 'any' }) as { [key: string]: JsonValue } : schema
}

/**
 * Remote tools: registered tools are advertised in the card and served over rpc
 * (`mesh.tool.call`); every call is checked against the policy and the tool's input schema
 * before the handler runs (NACK `unauthorized` / `invalid_request` with the validation message).
 */
export class ToolService {
  private readonly tools = new Map<string, Registered>()

  constructor (private readonly hooks: ToolServiceHooks) {}

  async register (name: string, definition: ToolDefinition): Promise<void> {
    const parsedName = CapabilityNameSchema.safeParse(name)
    if (!parsedName.success) throw new InvalidArgumentError(`invalid tool name ${JSON.stringify(name)}: ${parsedName.error.issues[0]?.message}`)
    if (this.tools.has(name)) throw new DuplicateHandlerError(`tool ${name} is already registered`)
    const spec: ToolSpec = { name, description: definition.description ?? '', inputSchema: toJsonSchema(definition.inputSchema) }
    if (definition.outputSchema !== undefined) spec.outputSchema = toJsonSchema(definition.outputSchema)
    const registered: Registered = { spec, validateInput: compile(definition.inputSchema, 'args'), definition }
    if (definition.outputSchema !== undefined) registered.validateOutput = compile(definition.outputSchema, 'result')
    this.tools.set(name, registered)
    await this.hooks.advertise(this.specs())
  }

  async unregister (name: string): Promise<void> {
    if (this.tools.delete(name)) await this.hooks.advertise(this.specs())
  }

  specs (): ToolSpec[] {
    return [...this.tools.values()].map(t => t.spec)
  }

  /** Call `tool` on `peer`; throws `NackError` (invalid_request with the validation message, unauthorized, incapable, …). */
  async call (peer: string, tool: string, args: JsonValue, options: RequestOptions = {}): Promise<JsonValue> {
    return this.hooks.request(peer, TOOL_CALL_METHOD, { tool, args }, options)
  }

  /** The rpc handler behind `mesh.tool.call`. */
  readonly serve = async (body: JsonValue, ctx: RpcContext): Promise<JsonValue> => {
    const request = ToolCallRequestSchema.safeParse(body)
    if (!request.success) throw new NackError('invalid_request', `not a tool call: ${request.error.issues[0]?.message}`)
    const { tool, args } = request.data
    const registered = this.tools.get(tool)
    if (registered === undefined) {
      this.hooks.audit({ peer: ctx.from, tool, outcome: 'refused: incapable' })
      throw new NackError('incapable', `no tool named ${tool}`)
    }
    const verdict = this.hooks.authorize(ctx.from, tool)
    if (!verdict.ok) {
      this.hooks.audit({ peer: ctx.from, tool, outcome: `refused: ${verdict.reason}`, detail: verdict.message })
      throw new NackError(verdict.reason, verdict.message)
    }
    const problem = registered.validateInput(args)
    if (problem !== undefined) {
      this.hooks.audit({ peer: ctx.from, tool, outcome: 'refused: invalid_request', detail: problem })
      throw new NackError('invalid_request', problem)
    }
    let result: JsonValue
    const limit = registered.definition.timeout ?? 30_000
    const ownLimit = AbortSignal.timeout(limit)
    const signal = AbortSignal.any([ctx.signal, ownLimit])
    try {
      result = await Promise.race([
        Promise.resolve().then(async () => registered.definition.handler(args, { from: ctx.from, signal })),
        new Promise<never>((_resolve, reject) => {
          signal.addEventListener('abort', () => { reject(ownLimit.aborted && !ctx.signal.aborted ? new NackError('timeout', `tool ${tool} did not finish within ${limit} ms`) : signal.reason) }, { once: true })
        })
      ])
    } catch (err) {
      if (err instanceof NackError) throw err
      log('tool %s failed: %s', tool, (err as Error).message)
      this.hooks.audit({ peer: ctx.from, tool, outcome: 'failed', detail: (err as Error).message })
      throw new NackError('internal_error', `tool ${tool} failed`)
    }
    const bad = registered.validateOutput?.(result)
    if (bad !== undefined) {
      log.error('tool %s returned a result that does not match its outputSchema: %s', tool, bad)
      throw new NackError('internal_error', `tool ${tool} returned an invalid result`)
    }
    this.hooks.audit({ peer: ctx.from, tool, outcome: 'ok' })
    return result ?? null
  }

  get (name: string): ToolSpec {
    const registered = this.tools.get(name)
    if (registered === undefined) throw new NotFoundError(`no tool named ${name}`)
    return registered.spec
  }
}
