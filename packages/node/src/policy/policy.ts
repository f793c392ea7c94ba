import { z } from 'zod'
import { TokenBuckets } from './token-bucket.js'
import type { RateLimit } from './token-bucket.js'

const Limit = z.object({ rate: z.number().positive(), burst: z.number().int().positive() })

/** Who may do what (DESIGN §9); lives under `policy` in config.json. */
export const PolicyConfigSchema = z.object({
  /** `open`: any peer of the mesh; `allowlist`: only `allow`. @default 'open' */
  mode: z.enum(['open', 'allowlist']).default('open'),
  allow: z.array(z.string()).default([]),
  /** Always refused, in either mode. */
  deny: z.array(z.string()).default([]),
  /** A grant restricts one tool or capability to the listed peers (on top of mode/allow). */
  grants: z.array(z.object({
    tool: z.string().optional(),
    capability: z.string().optional(),
    peers: z.array(z.string())
  }).refine(g => (g.tool === undefined) !== (g.capability === undefined), 'a grant names exactly one tool or capability')).default([]),
  /** In allowlist mode, park unknown senders' messages in quarantine instead of refusing them. @default true */
  quarantineUnknown: z.boolean().default(true),
  rateLimits: z.object({
    requests: Limit.optional(),
    tasks: Limit.optional(),
    deliveries: Limit.optional()
  }).default({})
})

export type PolicyConfig = z.input<typeof PolicyConfigSchema>
export type ResolvedPolicy = z.output<typeof PolicyConfigSchema>

/** Requests (rpc, tool calls) one peer may make per second, and the burst. */
export const DEFAULT_REQUEST_RATE: RateLimit = { rate: 20_000, burst: 20_000 }
/** Task submissions one peer may make per second, and the burst. */
export const DEFAULT_TASK_RATE: RateLimit = { rate: 50, burst: 100 }

export type Verdict = { ok: true } | { ok: false, reason: 'unauthorized' | 'overloaded', message: string }

const OK: Verdict = { ok: true }

/** Decides, for one persona, whether a peer may send, call a tool or submit a task. */
export class Policy {
  private config: ResolvedPolicy
  private readonly requests: TokenBuckets
  private readonly tasks: TokenBuckets

  constructor (config: PolicyConfig = {}) {
    this.config = PolicyConfigSchema.parse(config)
    this.requests = new TokenBuckets(this.config.rateLimits.requests ?? DEFAULT_REQUEST_RATE)
    this.tasks = new TokenBuckets(this.config.rateLimits.tasks ?? DEFAULT_TASK_RATE)
  }

  get snapshot (): ResolvedPolicy {
    return structuredClone(this.config)
  }

  get deliveryLimit (): RateLimit | undefined {
    return this.config.rateLimits.deliveries
  }

  /** Member of the mesh as far as this persona is concerned. */
  isAllowed (peer: string): boolean {
    if (this.config.deny.includes(peer)) return false
    return this.config.mode === 'open' || this.config.allow.includes(peer)
  }

  /** Where a message from `peer` goes. */
  incoming (peer: string): 'inbox' | 'quarantine' | 'refuse' {
    if (this.config.deny.includes(peer)) return 'refuse'
    if (this.isAllowed(peer)) return 'inbox'
    return this.config.quarantineUnknown ? 'quarantine' : 'refuse'
  }

  request (peer: string, method: string): Verdict {
    if (!this.isAllowed(peer)) return { ok: false, reason: 'unauthorized', message: `${method}: this persona does not accept requests from you` }
    if (!this.requests.take(peer)) return { ok: false, reason: 'overloaded', message: 'request rate limit: slow down' }
    return OK
  }

  tool (peer: string, tool: string): Verdict {
    return this.granted(peer, 'tool', tool)
  }

  task (peer: string, capability: string): Verdict {
    const verdict = this.granted(peer, 'capability', capability)
    if (!verdict.ok) return verdict
    if (!this.tasks.take(peer)) return { ok: false, reason: 'overloaded', message: 'task submission rate limit: slow down' }
    return OK
  }

  private granted (peer: string, kind: 'tool' | 'capability', name: string): Verdict {
    if (!this.isAllowed(peer)) return { ok: false, reason: 'unauthorized', message: `not allowed to use ${kind} ${name}` }
    const grants = this.config.grants.filter(g => g[kind] === name)
    if (grants.length > 0 && !grants.some(g => g.peers.includes(peer))) {
      return { ok: false, reason: 'unauthorized', message: `no grant for ${kind} ${name}` }
    }
    return OK
  }

  /** Let `peer` in: added to the allowlist, removed from the deny list. */
  allow (peer: string): ResolvedPolicy {
    this.config.deny = this.config.deny.filter(p => p !== peer)
    if (!this.config.allow.includes(peer)) this.config.allow.push(peer)
    return this.snapshot
  }

  /** Shut `peer` out: on the deny list, off the allowlist. */
  deny (peer: string): ResolvedPolicy {
    this.config.allow = this.config.allow.filter(p => p !== peer)
    if (!this.config.deny.includes(peer)) this.config.deny.push(peer)
    return this.snapshot
  }

  setMode (mode: 'open' | 'allowlist'): ResolvedPolicy {
    this.config.mode = mode
    return this.snapshot
  }
}
