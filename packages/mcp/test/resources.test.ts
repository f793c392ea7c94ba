/** Resources (`mesh://…`) and prompts (`check_inbox`, `delegate`). */
import { afterEach, describe, expect, it } from 'vitest'
import { UNTRUSTED } from '../src/index.js'
import { link, TestBed, waitFor } from './harness.js'
import type { Client } from '@modelcontextprotocol/sdk/client/index.js'

async function read (client: Client, uri: string): Promise<any> {
  const result = await client.readResource({ uri })
  expect(result.contents[0]).toMatchObject({ uri, mimeType: 'application/json' })
  return JSON.parse(result.contents[0]!.text as string)
}

describe('mcp resources and prompts', () => {
  const bed = new TestBed()
  afterEach(async () => { await bed.teardown() })

  it('serves self, peers, inbox, a peer\'s card and a task; peer content wrapped', async () => {
    const aria = await bed.node({ name: 'aria' })
    const kira = await bed.node({ name: 'kira', card: { description: 'reviewer', capabilities: ['sum'] } })
    kira.tasks.handle('sum', (input: number[]) => input.reduce((x, y) => x + y, 0))
    await link(aria, kira)
    const { client } = await bed.session(aria)

    const task = await aria.delegate({ capability: 'sum' }, [2, 3])
    await aria.tasks.wait(task.id, { timeout: 20_000 })
    const sent = await kira.send(aria.peerId, { text: 'hello' })
    await waitFor(async () => (await aria.inbox.get(sent.id)) !== undefined && (await aria.inbox.unread()) === 1, 'the message, and the task\'s own envelopes handled')

    const { resources } = await client.listResources()
    const uris = resources.map(r => r.uri)
    expect(uris).toEqual(expect.arrayContaining(['mesh://self', 'mesh://peers', 'mesh://inbox', `mesh://peer/${kira.peerId}/card`, `mesh://task/${task.id}`]))
    const { resourceTemplates } = await client.listResourceTemplates()
    expect(resourceTemplates.map(t => t.uriTemplate).sort()).toEqual(['mesh://peer/{id}/card', 'mesh://task/{id}'])

    expect((await read(client, 'mesh://self')).status).toMatchObject({ name: 'aria', peerId: aria.peerId })
    expect((await read(client, 'mesh://peers')).peers[0]).toMatchObject({ name: 'kira', card: { trust: UNTRUSTED, body: { description: 'reviewer' } } })
    const inbox = await read(client, 'mesh://inbox')
    expect(inbox.messages).toMatchObject([{ id: sent.id, content: { trust: UNTRUSTED, body: { text: 'hello' } } }])
    expect(inbox.inbox.unread).toBe(1)
    expect((await read(client, `mesh://peer/${kira.peerId}/card`)).card).toMatchObject({ trust: UNTRUSTED, from: { name: 'kira' }, body: { description: 'reviewer' } })
    expect((await read(client, 'mesh://peer/kira/card')).card.from.peerId).toBe(kira.peerId)
    expect((await read(client, `mesh://task/${task.id}`)).task).toMatchObject({ id: task.id, status: 'completed', theirs: { trust: UNTRUSTED, body: { result: 5 } } })
    await expect(client.readResource({ uri: 'mesh://task/01ARZ3NDEKTSV4RRFFQ69G5FAV' })).rejects.toThrow(/no task/)
    // reading resources marks nothing read
    expect(await aria.inbox.unread()).toBe(1)
  })

  it('offers the check_inbox and delegate prompts', async () => {
    const aria = await bed.node({ name: 'aria' })
    const { client } = await bed.session(aria)
    const { prompts } = await client.listPrompts()
    expect(prompts.map(p => p.name).sort()).toEqual(['check_inbox', 'delegate'])

    const check = await client.getPrompt({ name: 'check_inbox', arguments: {} })
    const text = check.messages[0]!.content.type === 'text' ? check.messages[0]!.content.text : ''
    expect(text).toContain('mesh_inbox')
    expect(text).toMatch(/not my consent/)

    const delegate = await client.getPrompt({ name: 'delegate', arguments: { capability: 'review', task: 'review PR 12' } })
    const body = delegate.messages[0]!.content.type === 'text' ? delegate.messages[0]!.content.text : ''
    expect(body).toContain('"review"')
    expect(body).toContain('mesh_find')
    expect(body).toContain('mesh_delegate')
    await expect(client.getPrompt({ name: 'delegate', arguments: {} })).rejects.toThrow(/capability/)
  })
})
