/** Runtime-neutral helper shared by the Bun and Deno ports. */

/**
 * Await `connecting`, failing with an `ETIMEDOUT` error after `timeoutMs` (no limit when 0 or
 * undefined). A connection that completes after the timeout is closed with `discard`, so it never leaks.
 */
export async function withConnectTimeout<C>(
  connecting: Promise<C>,
  target: { readonly hostname: string; readonly port: number; readonly timeoutMs?: number | undefined },
  discard: (connection: C) => void,
): Promise<C> {
  if (!target.timeoutMs) return connecting;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      const err = new Error(`Connect to ${target.hostname}:${target.port} timed out after ${target.timeoutMs} ms`);
      (err as Error & { code: string }).code = "ETIMEDOUT";
      reject(err);
    }, target.timeoutMs);
  });
  try {
    return await Promise.race([connecting, timeout]);
  } catch (err) {
    connecting.then(discard, () => {});
    throw err;
  } finally {
    clearTimeout(timer);
  }
}
