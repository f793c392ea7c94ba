import { defineConfig } from 'vitest/config'

export default defineConfig({
  test: {
    include: ['packages/*/test/**/*.test.ts', 'test/**/*.test.ts'],
    // tests start real nodes and processes; the machine is shared: be generous, never time-assert
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: 'forks',
    // 2 cores: two files at a time keeps real-network tests from starving each other
    maxWorkers: 2,
    // CI asks for a machine-readable report too (PMESH_TEST_REPORT=<file>) to print the totals line
    reporters: process.env.PMESH_TEST_REPORT !== undefined ? ['default', ['json', { outputFile: process.env.PMESH_TEST_REPORT }]] : ['default'],
    dangerouslyIgnoreUnhandledErrors: false
  }
})
