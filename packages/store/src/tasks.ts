import { DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE } from './constants.js'
import { clampLimit, type Db, indexSub, jsonSub, keyPart, SEP, type Sub } from './db.js'
import { InvalidRecordError } from './errors.js'
import type { AbortOptions, Page, TaskQuery, TaskRecord, TaskStore } from './index.js'
import { readPage } from './page.js'
import type { Serial } from './serial.js'

const DIRECTIONS = ['incoming', 'outgoing']

export interface TaskStoreInit {
  db: Db
  serial: Serial
  guard: () => void
}

/** Index keys of a task: by direction, status, both, and peer. */
function indexKeys (t: TaskRecord): string[] {
  return [
    `d${SEP}${t.direction}${SEP}${t.id}`,
    `s${SEP}${t.status}${SEP}${t.id}`,
    `ds${SEP}${t.direction}${SEP}${t.status}${SEP}${t.id}`,
    `p${SEP}${t.peer}${SEP}${t.id}`
  ]
}

export class LevelTaskStore implements TaskStore {
  private readonly tasks: Sub<TaskRecord>
  private readonly index: Sub<string>

  constructor (private readonly init: TaskStoreInit) {
    this.tasks = jsonSub(init.db, 'tk')
    this.index = indexSub(init.db, 'tki')
  }

  async put (task: TaskRecord, options: AbortOptions = {}): Promise<void> {
    this.init.guard()
    validateTask(task)
    // a JSON round trip: what is stored is what `get` gives back, and it fails here, not in a batch
    const value = JSON.parse(JSON.stringify(task)) as TaskRecord
    await this.init.serial.run(async txn => {
      const old = await txn.get(this.tasks, task.id)
      const next = new Set(indexKeys(value))
      if (old !== undefined) {
        for (const k of indexKeys(old)) if (!next.has(k)) txn.del(this.index, k)
      }
      txn.put(this.tasks, task.id, value)
      for (const k of next) txn.put(this.index, k, '')
    }, options)
  }

  async get (id: string, options: AbortOptions = {}): Promise<TaskRecord | undefined> {
    this.init.guard()
    options.signal?.throwIfAborted()
    return await this.tasks.get(keyPart(id, 'task id'))
  }

  async list (query: TaskQuery = {}): Promise<Page<TaskRecord>> {
    this.init.guard()
    const { direction, status, peer } = query
    if (direction !== undefined && !DIRECTIONS.includes(direction)) throw new InvalidRecordError(`unknown direction ${String(direction)}`)
    if (status !== undefined) keyPart(status, 'status')
    if (peer !== undefined) keyPart(peer, 'peer')
    let prefix: string | undefined
    if (direction !== undefined && status !== undefined) prefix = `ds${SEP}${direction}${SEP}${status}${SEP}`
    else if (direction !== undefined) prefix = `d${SEP}${direction}${SEP}`
    else if (status !== undefined) prefix = `s${SEP}${status}${SEP}`
    else if (peer !== undefined) prefix = `p${SEP}${peer}${SEP}`
    return await readPage({
      primary: this.tasks,
      ...(prefix === undefined ? {} : { index: this.index, prefix }),
      cursor: query.cursor,
      limit: clampLimit(query.limit, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE),
      reverse: query.reverse ?? false,
      signal: query.signal,
      map: (_key, t) => peer === undefined || t.peer === peer ? t : undefined
    })
  }

  async delete (id: string, options: AbortOptions = {}): Promise<boolean> {
    this.init.guard()
    keyPart(id, 'task id')
    return await this.init.serial.run(async txn => {
      const old = await txn.get(this.tasks, id)
      if (old === undefined) {
        return false
      }
      txn.del(this.tasks, id)
      for (const k of indexKeys(old)) txn.del(this.index, k)
      return true
    }, options)
  }
}

function validateTask (task: TaskRecord): void {
  if (typeof task !== 'object' || task === null) throw new InvalidRecordError('task must be an object')
  keyPart(task.id, 'task id')
  if (!DIRECTIONS.includes(task.direction)) throw new InvalidRecordError(`unknown task direction ${JSON.stringify(task.direction)}`)
  keyPart(task.status, 'task status')
  keyPart(task.peer, 'task peer')
  if (task.capability !== undefined && typeof task.capability !== 'string') throw new InvalidRecordError('task capability must be a string')
}
