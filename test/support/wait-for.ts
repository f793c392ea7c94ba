/**
 * Wait until `condition` returns something truthy (errors count as "not yet"); throws after
 * `timeout` ms with `what` and the last error in the message. Tests wait on conditions, never sleep.
 */
export async function waitFor<T> (condition: () => T | Promise<T>, what: string, timeout = 20_000, interval = 25): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeout
  let last: unknown
  while (Date.now() < deadline) {
    try {
      const value = await condition()
      if (value !== undefined && value !== null && value !== false) return value as NonNullable<T>
    } catch (err) {
      last = err
    }
    await new Promise(resolve => setTimeout(resolve, interval))
  }
  throw new Error(`timed out waiting for ${what}${last !== undefined ? ` (last error: ${(last as Error).message})` : ''}`)
}
