/** Waiting, the one way: every wait can end early when its owner is asked to stop. */

/** Resolves after `ms`, or at once when `signal` aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });
}

/**
 * Polls `check` every `intervalMs` until it returns a value other than undefined (returned), `timeoutMs` passes
 * (undefined), or `signal` aborts (undefined). For waits on state another process or loop changes.
 */
export async function waitUntil<T>(
  check: () => Promise<T | undefined> | T | undefined,
  { intervalMs, timeoutMs = Number.POSITIVE_INFINITY, signal }: { intervalMs: number; timeoutMs?: number; signal?: AbortSignal },
): Promise<T | undefined> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (signal?.aborted || Date.now() >= deadline) return undefined;
    await sleep(Math.min(intervalMs, Math.max(0, deadline - Date.now())), signal);
  }
}
