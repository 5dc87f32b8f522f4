/**
 * A level-triggered wake-up: `notify()` wakes every current waiter, and a notify with nobody waiting is remembered
 * so the next `wait()` returns at once (no lost wake-up between "checked for work" and "started waiting").
 */
export class WakeSignal {
  private pending = false;
  private waiters = new Set<() => void>();

  notify(): void {
    if (this.waiters.size === 0) {
      this.pending = true;
      return;
    }
    for (const wake of [...this.waiters]) wake();
  }

  /** Resolves 'notified', 'timeout' after `ms`, or 'aborted'. */
  wait(ms: number, signal?: AbortSignal): Promise<'notified' | 'timeout' | 'aborted'> {
    if (signal?.aborted) return Promise.resolve('aborted');
    if (this.pending) {
      this.pending = false;
      return Promise.resolve('notified');
    }
    return new Promise((resolve) => {
      const done = (outcome: 'notified' | 'timeout' | 'aborted') => {
        clearTimeout(timer);
        this.waiters.delete(onNotify);
        signal?.removeEventListener('abort', onAbort);
        resolve(outcome);
      };
      const onNotify = () => done('notified');
      const onAbort = () => done('aborted');
      const timer = setTimeout(() => done('timeout'), Math.max(0, ms));
      this.waiters.add(onNotify);
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }
}
