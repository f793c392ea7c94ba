/**
 * Node 20 lacks `Promise.withResolvers` (ES2024) and the ES2025 `Set` methods, both of which
 * libp2p 3 calls. Importing this module installs spec-shaped versions only where they are
 * missing; on Node 22+ it changes nothing. `@persona-mesh/node` imports it before libp2p.
 */

interface SetLike<T> {
  size: number
  has(value: T): boolean
  keys(): Iterator<T>
}

function install (target: object, name: string, value: unknown): boolean {
  if (name in target) {
    return false
  }
  Object.defineProperty(target, name, { value, writable: true, configurable: true, enumerable: false })
  return true
}

interface SetRecord<T> {
  size: number
  has(value: T): boolean
  keys(): Iterable<T>
}

// the built-ins read a Set's own data, not its (replaceable) methods
const setSize = Object.getOwnPropertyDescriptor(Set.prototype, 'size')?.get as (this: Set<unknown>) => number
const setHas = Set.prototype.has
const setValues = Set.prototype.values

/** `this` must be a real Set (RequireInternalSlot): the `size` getter throws a TypeError otherwise. */
function sizeOf (set: Set<unknown>): number {
  return setSize.call(set)
}

function contains<T> (set: Set<T>, value: T): boolean {
  return setHas.call(set, value)
}

function elements<T> (set: Set<T>): Iterable<T> {
  return { [Symbol.iterator]: () => setValues.call(set) }
}

/**
 * GetSetRecord (ES2025): the argument must be set-like, with a numeric `size` and callable `has`
 * and `keys`; an array or a plain object is a TypeError, not a silently wrong answer.
 */
function setRecord<T> (other: SetLike<T>): SetRecord<T> {
  if (typeof other !== 'object' || other === null) throw new TypeError('the argument is not set-like')
  const num = +(other.size as unknown as number)
  if (Number.isNaN(num)) throw new TypeError("the argument's size is not a number")
  const size = Math.trunc(num) + 0
  if (size < 0) throw new RangeError("the argument's size is negative")
  const has = other.has
  if (typeof has !== 'function') throw new TypeError("the argument's has is not a function")
  const keys = other.keys
  if (typeof keys !== 'function') throw new TypeError("the argument's keys is not a function")
  return {
    size,
    has: (value: T) => Boolean(has.call(other, value)),
    keys: () => ({
      [Symbol.iterator]: () => {
        const iterator = keys.call(other)
        if (typeof iterator !== 'object' || iterator === null) throw new TypeError("the argument's keys() is not an iterator")
        return iterator
      }
    })
  }
}

/** Install the missing built-ins; returns the names it added (empty on modern runtimes). */
export function installPolyfills (): string[] {
  const added: string[] = []
  const add = (target: object, name: string, value: unknown, label: string): void => {
    if (install(target, name, value)) added.push(label)
  }

  add(Promise, 'withResolvers', function withResolvers<T> (this: PromiseConstructor) {
    let resolve!: (value: T | PromiseLike<T>) => void
    let reject!: (reason?: unknown) => void
    const promise = new this<T>((res, rej) => { resolve = res; reject = rej })
    return { promise, resolve, reject }
  }, 'Promise.withResolvers')

  const proto = Set.prototype
  add(proto, 'union', function union<T> (this: Set<T>, other: SetLike<T>) {
    sizeOf(this)
    const rec = setRecord(other)
    const out = new Set(elements(this))
    for (const v of rec.keys()) out.add(v)
    return out
  }, 'Set.prototype.union')
  add(proto, 'intersection', function intersection<T> (this: Set<T>, other: SetLike<T>) {
    sizeOf(this)
    const rec = setRecord(other)
    const out = new Set<T>()
    if (sizeOf(this) <= rec.size) {
      for (const v of elements(this)) if (rec.has(v)) out.add(v)
    } else {
      // the smaller side drives: the result follows the argument's order
      for (const v of rec.keys()) if (contains(this, v)) out.add(v)
    }
    return out
  }, 'Set.prototype.intersection')
  add(proto, 'difference', function difference<T> (this: Set<T>, other: SetLike<T>) {
    sizeOf(this)
    const rec = setRecord(other)
    const out = new Set(elements(this))
    if (sizeOf(this) <= rec.size) {
      for (const v of elements(this)) if (rec.has(v)) out.delete(v)
    } else {
      for (const v of rec.keys()) out.delete(v)
    }
    return out
  }, 'Set.prototype.difference')
  add(proto, 'symmetricDifference', function symmetricDifference<T> (this: Set<T>, other: SetLike<T>) {
    sizeOf(this)
    const rec = setRecord(other)
    const out = new Set(elements(this))
    for (const v of rec.keys()) {
      if (contains(this, v)) out.delete(v)
      else out.add(v)
    }
    return out
  }, 'Set.prototype.symmetricDifference')
  add(proto, 'isSubsetOf', function isSubsetOf<T> (this: Set<T>, other: SetLike<T>) {
    sizeOf(this)
    const rec = setRecord(other)
    if (sizeOf(this) > rec.size) return false
    for (const v of elements(this)) if (!rec.has(v)) return false
    return true
  }, 'Set.prototype.isSubsetOf')
  add(proto, 'isSupersetOf', function isSupersetOf<T> (this: Set<T>, other: SetLike<T>) {
    sizeOf(this)
    const rec = setRecord(other)
    if (sizeOf(this) < rec.size) return false
    for (const v of rec.keys()) if (!contains(this, v)) return false
    return true
  }, 'Set.prototype.isSupersetOf')
  add(proto, 'isDisjointFrom', function isDisjointFrom<T> (this: Set<T>, other: SetLike<T>) {
    sizeOf(this)
    const rec = setRecord(other)
    if (sizeOf(this) <= rec.size) {
      for (const v of elements(this)) if (rec.has(v)) return false
    } else {
      for (const v of rec.keys()) if (contains(this, v)) return false
    }
    return true
  }, 'Set.prototype.isDisjointFrom')
  return added
}

installPolyfills()
