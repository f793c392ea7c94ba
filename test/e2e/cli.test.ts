import { afterEach, describe, expect, it } from 'vitest'
import { Processes } from './processes.js'

describe('pmesh as real processes', () => {
  const procs = new Processes()
  afterEach(async () => { await procs.teardown() })

  it('init prints a stable PeerId; two started daemons answer a request through the CLI; SIGTERM exits 0', async () => {
    const home = await procs.home()
    const init = await procs.run(['init', '--name', 'aria', '--home', home])
    expect(init.code).toBe(0)
    const peerId = init.stdout.trim()
    expect(peerId).toMatch(/^12D3KooW/)
    const again = await procs.run(['init', '--name', 'aria', '--home', home, '--json'])
    expect(JSON.parse(again.stdout)).toMatchObject({ peerId, created: false })

    const aria = await procs.start('aria', home)
    const kira = await procs.start('kira', home)
    expect(aria.peerId).toBe(peerId)
    expect(kira.multiaddrs[0]).toMatch(/^\/ip4\/127\.0\.0\.1\/tcp\/\d+\/p2p\//)

    const answer = await procs.run(['request', '--name', 'aria', '--home', home, kira.multiaddrs[0]!, 'mesh.echo', '--body', '{"hello":"kira"}'])
    expect(answer.stderr).toBe('')
    expect(answer.code).toBe(0)
    expect(JSON.parse(answer.stdout)).toEqual({ hello: 'kira' })

    const status = await procs.run(['status', '--name', 'aria', '--home', home, '--json'])
    expect(status.code).toBe(0)
    expect(JSON.parse(status.stdout)).toMatchObject({ name: 'aria', peerId, running: true, peers: [kira.peerId] })

    const refused = await procs.run(['request', '--name', 'aria', '--home', home, kira.peerId, 'no.such', '--body', '1'])
    expect(refused.code).toBe(1)
    expect(refused.stderr).toContain('incapable')

    expect(await procs.stop(aria.child)).toBe(0)
    expect(await procs.stop(kira.child)).toBe(0)
  })

  it('exit codes: 3 when no daemon runs, 2 for usage errors and bad JSON', async () => {
    const home = await procs.home()
    const none = await procs.run(['status', '--name', 'ghost', '--home', home])
    expect(none.code).toBe(3)
    expect(none.stderr).toContain('pmesh start --name ghost')

    const usage = await procs.run(['no-such-command'])
    expect(usage.code).toBe(2)

    const badName = await procs.run(['init', '--name', '../etc', '--home', home])
    expect(badName.code).toBe(2)

    await procs.start('aria', home)
    const badJson = await procs.run(['request', '--name', 'aria', '--home', home, 'x', 'y', '--body', '{nope'])
    expect(badJson.code).toBe(2)
    expect(badJson.stderr).toContain('--body is not valid JSON')
  })

  it('a second daemon for the same persona is refused with a clear message', async () => {
    const home = await procs.home()
    await procs.start('aria', home)
    const second = await procs.start('aria', home).catch(e => e as Error)
    expect(second).toBeInstanceOf(Error)
    expect((second as Error).message).toMatch(/in use by persona aria \(pid \d+/)
  })
})

describe('pmesh discovery commands across three processes', () => {
  const procs = new Processes()
  afterEach(async () => { await procs.teardown() })

  it('init saves the card; find finds a peer by capability; peers and cards list it', async () => {
    const home = await procs.home()
    expect((await procs.run(['init', '--name', 'kira', '--home', home, '--description', 'code analyst', '--capability', 'analyze_code:typescript,security', '--capability', 'review'])).code).toBe(0)
    const hub = await procs.start('hub', home)
    const kira = await procs.start('kira', home, ['--bootstrap', hub.multiaddrs[0]!])
    await procs.start('coordinator', home, ['--bootstrap', hub.multiaddrs[0]!])

    let found: Array<{ name: string, peerId: string }> = []
    const deadline = Date.now() + 30_000
    while (Date.now() < deadline) {
      const result = await procs.run(['find', 'analyze_code', '--name', 'coordinator', '--home', home, '--json'])
      if (result.code === 0) {
        found = JSON.parse(result.stdout)
        if (found.length > 0) break
      } else {
        expect(result.code).toBe(3)
      }
      await new Promise(resolve => setTimeout(resolve, 250))
    }
    expect(found[0]).toMatchObject({ name: 'kira', peerId: kira.peerId })

    const card = await procs.run(['cards', 'kira', '--name', 'coordinator', '--home', home, '--json'])
    expect(card.code).toBe(0)
    expect(JSON.parse(card.stdout)).toMatchObject({ name: 'kira', description: 'code analyst', capabilities: [{ name: 'analyze_code', tags: ['typescript', 'security'] }, { name: 'review' }] })

    const table = await procs.run(['peers', '--name', 'coordinator', '--home', home])
    expect(table.code).toBe(0)
    expect(table.stdout).toMatch(/^NAME\s+PEERID\s+ONLINE/)
    expect(table.stdout).toContain('kira')

    const nothing = await procs.run(['find', 'no_such_capability', '--name', 'coordinator', '--home', home])
    expect(nothing.code).toBe(3)
  })
})

describe('pmesh messages and agent-worked tasks across daemons', () => {
  const procs = new Processes()
  afterEach(async () => { await procs.teardown() })

  async function until<T> (what: string, fn: () => Promise<T | undefined>): Promise<T> {
    const deadline = Date.now() + 30_000
    while (Date.now() < deadline) {
      const value = await fn()
      if (value !== undefined) return value
      await new Promise(resolve => setTimeout(resolve, 200))
    }
    throw new Error(`timed out waiting for ${what}`)
  }

  it('send → inbox → ack; delegate → the agent completes it with task update → the delegator sees the result and the trace', async () => {
    const home = await procs.home()
    const coordinator = await procs.start('coordinator', home)
    await procs.start('kira', home, ['--bootstrap', coordinator.multiaddrs[0]!, '--capability', 'review:code'])
    const cli = async (...args: string[]) => procs.run([...args, '--home', home])
    await until('kira\'s card', async () => (await cli('cards', 'kira', '--name', 'coordinator', '--json')).code === 0 ? true : undefined)

    const sent = await cli('send', 'kira', 'hello kira \u001b[2J', '--name', 'coordinator', '--wait-delivered', '20', '--json')
    expect(sent.stderr).toBe('')
    expect(sent.code).toBe(0)
    const { id, status } = JSON.parse(sent.stdout)
    expect(status).toBe('delivered')
    const inbox = JSON.parse((await cli('inbox', '--name', 'kira', '--json')).stdout)
    expect(inbox.messages.map((m: { id: string }) => m.id)).toContain(id)
    const table = (await cli('inbox', '--name', 'kira')).stdout
    expect(table).toContain('hello kira')
    expect(table).not.toContain('\u001b')
    expect((await cli('ack', id, '--name', 'kira')).code).toBe(0)
    expect(JSON.parse((await cli('inbox', '--name', 'kira', '--json')).stdout).unread).toBe(0)

    const delegated = await cli('delegate', '--capability', 'review', '{"code":"let x = 1"}', '--name', 'coordinator', '--json')
    expect(delegated.code).toBe(0)
    const task = JSON.parse(delegated.stdout)
    const incoming = await until('the task at kira', async () => {
      const list = JSON.parse((await cli('tasks', '--incoming', '--name', 'kira', '--json')).stdout) as Array<{ id: string, status: string }>
      return list.find(t => t.id === task.id)
    })
    expect(incoming.status).toBe('submitted')
    expect((await cli('task', 'update', task.id, '--status', 'working', '--progress', '50', '--name', 'kira')).code).toBe(0)
    expect((await cli('task', 'update', task.id, '--status', 'completed', '--result', '{"verdict":"ok"}', '--name', 'kira')).code).toBe(0)
    const done = await until('the result at the coordinator', async () => {
      const info = JSON.parse((await cli('task', task.id, '--name', 'coordinator', '--json')).stdout)
      return info.status === 'completed' ? info : undefined
    })
    expect(done.result).toEqual({ verdict: 'ok' })
    const trace = await cli('trace', task.id, '--name', 'coordinator')
    expect(trace.code).toBe(0)
    expect(trace.stdout).toMatch(/review → kira\s+completed/)
  })
})
