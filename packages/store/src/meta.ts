import type { JsonValue } from '@persona-mesh/protocol'
import { type Db, encodeDel, encodePut, jsonSub, keyPart, type Sub } from './db.js'
import { InvalidRecordError } from './errors.js'
import type { AbortOptions, MetaStore } from './index.js'
import type { SyncWriter } from './writer.js'

export interface MetaStoreInit {
  db: Db
  writer: SyncWriter
  guard: () => void
}

/** Small JSON settings: subscriptions, own card seq, config. */
export class LevelMetaStore implements MetaStore {
  private readonly meta: Sub<JsonValue>

  constructor (private readonly init: MetaStoreInit) {
    this.meta = jsonSub(init.db, 'mt')
  }

  async get<T extends JsonValue = JsonValue> (key: string, options: AbortOptions = {}): Promise<T | undefined> {
    this.init.guard()
    options.signal?.throwIfAborted()
    return await this.meta.get(keyPart(key, 'meta key')) as T | undefined
  }

  async put (key: string, value: JsonValue, options: AbortOptions = {}): Promise<void> {
    this.init.guard()
    keyPart(key, 'meta key')
    if (value === undefined) throw new InvalidRecordError('meta value must be JSON, not undefined')
    // encoded here, so an unencodable value fails this call and not a shared batch
    await this.init.writer.write([encodePut(this.meta, key, value)], options)
  }

  async delete (key: string, options: AbortOptions = {}): Promise<void> {
    this.init.guard()
    keyPart(key, 'meta key')
    await this.init.writer.write([encodeDel(this.meta, key)], options)
  }
}
