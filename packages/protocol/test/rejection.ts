/** The error `promise` rejects with; fails the test if it resolves. */
export async function rejection (promise: Promise<unknown>): Promise<Error> {
  try {
    await promise
  } catch (err) {
    return err as Error
  }
  throw new Error('expected a rejection, but the promise resolved')
}
