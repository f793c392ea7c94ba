import { execFileSync } from 'node:child_process'
import { arch, availableParallelism, cpus, loadavg, platform, release, totalmem } from 'node:os'
import { ed25519 } from '@persona-mesh/protocol'

export interface MachineInfo {
  cpus: number
  cpuModel: string
  availableParallelism: number
  totalMemoryMB: number
  loadAverage: number[]
  node: string
  platform: string
  release: string
  arch: string
  /** The Ed25519 implementation the mesh signs and verifies with (`PMESH_ED25519` can change it). */
  ed25519: string
  commit?: string
  dirty?: boolean
}

export function machineInfo (repoRoot: string): MachineInfo {
  const list = cpus()
  const info: MachineInfo = {
    cpus: list.length,
    cpuModel: list[0]?.model?.trim() ?? 'unknown',
    availableParallelism: availableParallelism(),
    totalMemoryMB: Math.round(totalmem() / 2 ** 20),
    loadAverage: loadavg().map(v => Math.round(v * 100) / 100),
    node: process.version,
    platform: platform(),
    release: release(),
    arch: arch(),
    ed25519: ed25519().name
  }
  try {
    // read-only: which code was measured
    info.commit = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: repoRoot, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], timeout: 5000 }).trim()
    info.dirty = execFileSync('git', ['status', '--porcelain', '--untracked-files=no'], { cwd: repoRoot, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], timeout: 5000 }).trim() !== ''
  } catch {}
  return info
}
