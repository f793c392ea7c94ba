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

function iterate<T> (other: SetLike<T>): Iterable<T> {
  return { [Symbol.iterator]: () => other.keys() }
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
    const out = new Set(this)
    for (const v of iterate(other)) out.add(v)
    return out
  }, 'Set.prototype.union')
  add(proto, 'intersection', function intersection<T> (this: Set<T>, other: SetLike<T>) {
    const out = new Set<T>()
    for (const v of this) if (other.has(v)) out.add(v)
    return out
  }, 'Set.prototype.intersection')
  add(proto, 'difference', function difference<T> (this: Set<T>, other: SetLike<T>) {
    const out = new Set<T>()
    for (const v of this) if (!other.has(v)) out.add(v)
    return out
  }, 'Set.prototype.difference')
  add(proto, 'symmetricDifference', function symmetricDifference<T> (this: Set<T>, other: SetLike<T>) {
    const out = new Set(this)
    for (const v of iterate(other)) {
      if (this.has(v)) out.delete(v)
      else out.add(v)
    }
    return out
  }, 'Set.prototype.symmetricDifference')
  add(proto, 'isSubsetOf', function isSubsetOf<T> (this: Set<T>, other: SetLike<T>) {
    for (const v of this) if (!other.has(v)) return false
    return true
  }, 'Set.prototype.isSubsetOf')
  add(proto, 'isSupersetOf', function isSupersetOf<T> (this: Set<T>, other: SetLike<T>) {
    for (const v of iterate(other)) if (!this.has(v)) return false
    return true
  }, 'Set.prototype.isSupersetOf')
  add(proto, 'isDisjointFrom', function isDisjointFrom<T> (this: Set<T>, other: SetLike<T>) {
    for (const v of this) if (other.has(v)) return false
    return true
  }, 'Set.prototype.isDisjointFrom')
  return added
}

installPolyfills()
