#!/usr/bin/env node
import { main } from './index.js'

process.on('unhandledRejection', (err) => {
  process.stderr.write(`pmesh: unexpected error: ${(err as Error)?.stack ?? String(err)}\n`)
  process.exitCode = 1
})

main(process.argv.slice(2)).then((code) => {
  process.exitCode = code
}, (err: Error) => {
  process.stderr.write(`pmesh: ${err.stack ?? err.message}\n`)
  process.exitCode = 1
})
