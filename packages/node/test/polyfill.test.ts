import { beforeAll, describe, expect, it } from 'vitest'

/**
 * The built-ins the polyfill provides. Captured before the module is imported (static imports are
 * hoisted, so it is imported dynamically in `beforeAll`): on Node 22+ these are native, on Node 20
 * they are missing — unless another file in this worker already installed them.
 */
const SET_METHODS = ['union', 'intersection', 'difference', 'symmetricDifference', 'isSubsetOf', 'isSupersetOf', 'isDisjointFrom'] as const
type SetMethod = typeof SET_METHODS[number]
type AnyFn = (...args: any[]) => any

interface Target { owner: any, name: string, label: string }
const TARGETS: Target[] = [
  { owner: Promise, name: 'withResolvers', label: 'Promise.withResolvers' },
  ...SET_METHODS.map(name => ({ owner: Set.prototype, name, label: `Set.prototype.${name}` }))
]
const before = new Map(TARGETS.map(t => [t.label, Object.getOwnPropertyDescriptor(t.owner, t.name)]))

let installPolyfills: () => string[]

beforeAll(async () => {
  ({ installPolyfills } = await import('@persona-mesh/node/polyfill'))
})

/**
 * Remove the given built-ins, let `installPolyfills()` put its own versions in, hand those back,
 * and restore the originals (native or not) whatever happens. The global is only ever without
 * them inside this function.
 */
function polyfilled (targets: Target[] = TARGETS): { added: string[], fns: Map<string, AnyFn>, descriptors: Map<string, PropertyDescriptor | undefined> } {
  const saved = targets.map(t => [t, Object.getOwnPropertyDescriptor(t.owner, t.name)] as const)
  try {
    for (const t of targets) delete t.owner[t.name]
    const added = installPolyfills()
    const fns = new Map(targets.map(t => [t.label, t.owner[t.name] as AnyFn]))
    const descriptors = new Map(targets.map(t => [t.label, Object.getOwnPropertyDescriptor(t.owner, t.name)]))
    return { added, fns, descriptors }
  } finally {
    for (const [t, descriptor] of saved) {
      if (descriptor === undefined) delete t.owner[t.name]
      else Object.defineProperty(t.owner, t.name, descriptor)
    }
  }
}

let impl: Map<string, AnyFn>
const set = <T>(...items: T[]): Set<T> => new Set(items)
const call = (method: SetMethod, self: Set<unknown>, other: unknown): any => impl.get(`Set.prototype.${method}`)!.call(self, other)
const items = (s: Set<unknown>): unknown[] => [...s]

/** A set-like that is not a Set: records which of its members the method used. */
function setLike (values: unknown[], size = values.length): { size: number, has(v: unknown): boolean, keys(): Iterator<unknown>, calls: string[] } {
  const calls: string[] = []
  return {
    calls,
    get size () { calls.push('size'); return size },
    has (v: unknown) { calls.push(`has(${String(v)})`); return values.includes(v) },
    keys () { calls.push('keys'); return values[Symbol.iterator]() }
  }
}

describe('installPolyfills', () => {
  it('after import every built-in is there, and the ones that existed before are untouched', () => {
    for (const t of TARGETS) {
      expect(typeof t.owner[t.name], t.label).toBe('function')
      const original = before.get(t.label)
      if (original !== undefined) expect(t.owner[t.name], `${t.label} was replaced`).toBe(original.value)
    }
  })

  it('called again adds nothing and replaces nothing', () => {
    const current = TARGETS.map(t => t.owner[t.name])
    expect(installPolyfills()).toEqual([])
    expect(installPolyfills()).toEqual([])
    expect(TARGETS.map(t => t.owner[t.name])).toEqual(current)
    TARGETS.forEach((t, i) => { expect(t.owner[t.name], t.label).toBe(current[i]) })
  })

  it.runIf(TARGETS.every(t => before.get(t.label) !== undefined))('on a runtime that has them natively, nothing is added', () => {
    expect(installPolyfills()).toEqual([])
    for (const t of TARGETS) {
      expect(t.owner[t.name]).toBe(before.get(t.label)?.value)
      expect(Function.prototype.toString.call(t.owner[t.name])).toContain('[native code]')
    }
  })

  it('installs one that is missing, lists it, and leaves the others alone', () => {
    const target = TARGETS.find(t => t.name === 'isDisjointFrom')!
    const original = target.owner[target.name]
    const others = TARGETS.filter(t => t !== target).map(t => t.owner[t.name])
    try {
      delete target.owner[target.name]
      expect(target.name in target.owner).toBe(false)
      expect(installPolyfills()).toEqual(['Set.prototype.isDisjointFrom'])
      expect(typeof target.owner[target.name]).toBe('function')
      expect(new Set([1, 2]).isDisjointFrom(new Set([3]))).toBe(true)
      expect(new Set([1, 2]).isDisjointFrom(new Set([2]))).toBe(false)
      expect(TARGETS.filter(t => t !== target).map(t => t.owner[t.name])).toEqual(others)
      expect(installPolyfills()).toEqual([])
    } finally {
      Object.defineProperty(target.owner, target.name, { value: original, writable: true, configurable: true, enumerable: false })
    }
    expect(target.owner[target.name]).toBe(original)
  })

  it('installs all of them where all are missing, shaped like built-ins', () => {
    const { added, fns, descriptors } = polyfilled()
    expect(added).toEqual(TARGETS.map(t => t.label))
    for (const t of TARGETS) {
      expect(fns.get(t.label)?.name).toBe(t.name)
      expect(descriptors.get(t.label)).toMatchObject({ writable: true, configurable: true, enumerable: false })
    }
    expect(fns.get('Promise.withResolvers')?.length).toBe(0)
    // the originals are back
    for (const t of TARGETS) {
      const original = before.get(t.label)
      if (original !== undefined) expect(t.owner[t.name]).toBe(original.value)
    }
  })
})

describe('the installed versions behave per spec', () => {
  beforeAll(() => {
    impl = polyfilled().fns
  })

  it('union', () => {
    expect(items(call('union', set(1, 2, 3), set(3, 4, 1, 5)))).toEqual([1, 2, 3, 4, 5])
    expect(items(call('union', set(), set('a')))).toEqual(['a'])
    expect(items(call('union', set(1), setLike([2, 1, 2])))).toEqual([1, 2])
    const self = set(1)
    const out = call('union', self, set(2))
    expect(out).not.toBe(self)
    expect(items(self)).toEqual([1])
  })

  it('intersection, following the smaller side', () => {
    expect(items(call('intersection', set(1, 2, 3, 4), set(4, 2, 9)))).toEqual([4, 2])
    expect(items(call('intersection', set(3, 2), set(1, 2, 3, 4)))).toEqual([3, 2])
    expect(items(call('intersection', set(1, 2), set()))).toEqual([])
    expect(items(call('intersection', set(1, 2, 3), setLike([3, 1])))).toEqual([3, 1])
    expect(items(call('intersection', set(1, 2), setLike([2, 1, 5])))).toEqual([1, 2])
  })

  it('difference', () => {
    expect(items(call('difference', set(1, 2, 3, 4), set(2, 4, 6)))).toEqual([1, 3])
    expect(items(call('difference', set(1, 2, 3), setLike([3])))).toEqual([1, 2])
    expect(items(call('difference', set(1, 2), setLike([0, 1, 2, 3])))).toEqual([])
    expect(items(call('difference', set(1), set()))).toEqual([1])
  })

  it('symmetricDifference', () => {
    expect(items(call('symmetricDifference', set(1, 2, 3), set(3, 4, 1)))).toEqual([2, 4])
    expect(items(call('symmetricDifference', set(1, 2), setLike([2, 5, 5])))).toEqual([1, 5])
    expect(items(call('symmetricDifference', set(), set()))).toEqual([])
  })

  it('isSubsetOf', () => {
    expect(call('isSubsetOf', set(1, 2), set(3, 2, 1))).toBe(true)
    expect(call('isSubsetOf', set(1, 4), set(1, 2, 3))).toBe(false)
    expect(call('isSubsetOf', set(), set())).toBe(true)
    expect(call('isSubsetOf', set(1), setLike([1, 2]))).toBe(true)
    expect(call('isSubsetOf', set(1, 2), setLike([1]))).toBe(false)
  })

  it('isSupersetOf', () => {
    expect(call('isSupersetOf', set(1, 2, 3), set(3, 1))).toBe(true)
    expect(call('isSupersetOf', set(1, 2), set(2, 5))).toBe(false)
    expect(call('isSupersetOf', set(1), set())).toBe(true)
    expect(call('isSupersetOf', set(1, 2), setLike([2]))).toBe(true)
    expect(call('isSupersetOf', set(1), setLike([1, 2]))).toBe(false)
  })

  it('isDisjointFrom', () => {
    expect(call('isDisjointFrom', set(1, 2), set(3, 4))).toBe(true)
    expect(call('isDisjointFrom', set(1, 2), set(2))).toBe(false)
    expect(call('isDisjointFrom', set(), set(1))).toBe(true)
    expect(call('isDisjointFrom', set(1, 2, 3), setLike([9, 3]))).toBe(false)
    expect(call('isDisjointFrom', set(1), setLike([2, 3]))).toBe(true)
  })

  it('treats -0 and +0 as the same element', () => {
    expect(items(call('union', set(0), set(-0)))).toEqual([0])
    expect(Object.is(items(call('union', set(), setLike([-0])))[0], 0)).toBe(true)
    expect(call('isSubsetOf', set(0), set(-0))).toBe(true)
  })

  it('uses a set-like argument through size, has and keys only, like the built-ins', () => {
    // this smaller than the argument: walk this, ask the argument
    const small = setLike([1, 2, 3])
    expect(items(call('intersection', set(2), small))).toEqual([2])
    expect(small.calls).toEqual(['size', 'has(2)'])
    // this larger: walk the argument, ask this
    const big = setLike([3])
    expect(items(call('intersection', set(1, 2, 3), big))).toEqual([3])
    expect(big.calls).toEqual(['size', 'keys'])
    // a subset cannot be larger than its superset: no need to look further
    const tiny = setLike([1])
    expect(call('isSubsetOf', set(1, 2), tiny)).toBe(false)
    expect(tiny.calls).toEqual(['size'])
  })

  it.each(SET_METHODS)('%s refuses an argument that is not set-like, as the built-ins do', (method) => {
    // an array has keys() (its indices!) but no size or has: answering with them would be wrong
    expect(() => call(method, set(1), [5])).toThrow(TypeError)
    expect(() => call(method, set(1), { size: Number.NaN, has: () => true, keys: () => [][Symbol.iterator]() })).toThrow(TypeError)
    expect(() => call(method, set(1), { size: 1, has: 'no', keys: () => [][Symbol.iterator]() })).toThrow(TypeError)
    expect(() => call(method, set(1), { size: 1, has: () => true })).toThrow(TypeError)
    expect(() => call(method, set(1), { size: -1, has: () => true, keys: () => [][Symbol.iterator]() })).toThrow(RangeError)
    expect(() => call(method, set(1), null)).toThrow(TypeError)
    expect(() => call(method, set(1), 5)).toThrow(TypeError)
  })

  it.each(SET_METHODS)('%s refuses a receiver that is not a Set', (method) => {
    expect(() => impl.get(`Set.prototype.${method}`)!.call([1, 2], set(1))).toThrow(TypeError)
  })

  it('Promise.withResolvers', async () => {
    const withResolvers = impl.get('Promise.withResolvers')!
    const a = withResolvers.call(Promise)
    expect(a.promise).toBeInstanceOf(Promise)
    a.resolve(42)
    await expect(a.promise).resolves.toBe(42)
    const b = withResolvers.call(Promise)
    b.reject(new RangeError('no'))
    await expect(b.promise).rejects.toThrow(RangeError)
    // settles once: later calls are ignored
    const c = withResolvers.call(Promise)
    c.resolve('first')
    c.resolve('second')
    c.reject(new Error('late'))
    await expect(c.promise).resolves.toBe('first')
    // resolving with a thenable adopts it
    const d = withResolvers.call(Promise)
    d.resolve(Promise.resolve('adopted'))
    await expect(d.promise).resolves.toBe('adopted')
    // uses the constructor it is called on
    class MyPromise<T> extends Promise<T> {}
    const e = withResolvers.call(MyPromise)
    expect(e.promise).toBeInstanceOf(MyPromise)
    e.resolve(1)
    await expect(e.promise).resolves.toBe(1)
    expect(() => withResolvers.call({})).toThrow(TypeError)
  })
})
