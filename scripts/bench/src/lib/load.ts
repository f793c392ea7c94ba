import { performance } from 'node:perf_hooks'

/** What a load phase measured: per-request latencies (ms, µs precision) and wall time. */
export interface PhaseSamples {
  completed: number
  elapsedMs: number
  latencies: number[]
  /** The phase stopped early because it hit its time cap. */
  capped: boolean
  /** CPU time (user + system) this process spent during the phase, µs. */
  cpuUs: number
  /** Time this process's event loop was busy during the phase, ms. */
  loopBusyMs: number
  /** Requests that resolved to `false` (counted as failed, not timed). */
  failed?: number
}

export interface PhaseParams {
  /** Requests to complete (upper bound). */
  count: number
  /** Stop issuing new requests after this long. */
  maxMs: number
  /** Requests in flight at once. @default 1 */
  inflight?: number
}

const MAX_COUNT = 1_000_000

/**
 * Run `request` `count` times with `inflight` requests outstanding at once (1 = one at a time),
 * recording each round trip. Bounded by count and by time: no new request starts after `maxMs`.
 * A request resolving to `false` is counted as failed and not timed.
 */
export async function runPhase (request: () => Promise<unknown>, params: PhaseParams): Promise<PhaseSamples> {
  const count = Math.min(Math.max(0, Math.floor(params.count)), MAX_COUNT)
  const inflight = Math.max(1, Math.min(Math.floor(params.inflight ?? 1), 1024))
  const latencies = new Float64Array(count)
  let issued = 0
  let completed = 0
  let failed = 0
  let capped = false
  const cpu0 = process.cpuUsage()
  const loop0 = performance.eventLoopUtilization()
  const start = performance.now()
  const stopAt = start + params.maxMs

  const lane = async (): Promise<void> => {
    while (issued < count) {
      const t0 = performance.now()
      if (t0 >= stopAt) { capped = true; return }
      issued++
      if (await request() === false) { failed++; continue }
      latencies[completed++] = performance.now() - t0
    }
  }
  await Promise.all(Array.from({ length: inflight }, lane))
  const elapsedMs = performance.now() - start
  const cpu = process.cpuUsage(cpu0)
  const loopBusyMs = performance.eventLoopUtilization(loop0).active
  const out = new Array<number>(completed)
  for (let i = 0; i < completed; i++) out[i] = Math.round(latencies[i] * 1000) / 1000
  return { completed, elapsedMs, latencies: out, capped, cpuUs: cpu.user + cpu.system, loopBusyMs, ...(failed > 0 ? { failed } : {}) }
}
