/** Thrown by Slots.acquire when its signal aborts while it waits: the caller is stopping, not failing. */
export class SlotWaitAbortedError extends Error {
  override name = 'SlotWaitAbortedError';
  constructor() {
    super('stopped while waiting for a batch slot');
  }
}

/**
 * A counting semaphore handing out its slots first come, first served. The runner bounds with it the batch
 * transactions an instance runs at once (--max-concurrent-batches): on a few cores shared with PostgreSQL, every
 * projection of a wake-up starting its transaction together made each of them as slow as all of them, while in turn
 * the first ones are done early. Waiters are served in arrival order, so no projection is passed over for ever.
 */
export class Slots {
  private inUse = 0;
  private readonly waiters: Array<{ grant: () => void }> = [];

  constructor(
    readonly size: number,
    /** Told the number of waiters whenever it changes (the batches-waiting gauge). */
    private readonly onWaiting?: (waiting: number) => void,
  ) {
    if (!Number.isInteger(size) || size < 1) throw new RangeError(`slots must be a positive integer (got ${size})`);
  }

  get waiting(): number {
    return this.waiters.length;
  }

  get busy(): number {
    return this.inUse;
  }

  /**
   * Resolves with the release function once a slot is this caller's; call it exactly once (a second call does
   * nothing). Rejects with SlotWaitAbortedError when `signal` aborts first (it takes no slot then).
   */
  acquire(signal?: AbortSignal): Promise<() => void> {
    if (signal?.aborted) return Promise.reject(new SlotWaitAbortedError());
    if (this.inUse < this.size && this.waiters.length === 0) {
      this.inUse++;
      return Promise.resolve(this.releaser());
    }
    return new Promise((resolve, reject) => {
      const waiter = {
        grant: () => {
          signal?.removeEventListener('abort', onAbort);
          resolve(this.releaser());
        },
      };
      const onAbort = () => {
        const i = this.waiters.indexOf(waiter);
        if (i >= 0) this.waiters.splice(i, 1);
        this.onWaiting?.(this.waiters.length);
        reject(new SlotWaitAbortedError());
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.waiters.push(waiter);
      this.onWaiting?.(this.waiters.length);
    });
  }

  /** Runs `fn` in a slot, released however `fn` ends. */
  async run<T>(fn: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    const release = await this.acquire(signal);
    try {
      return await fn();
    } finally {
      release();
    }
  }

  private releaser(): () => void {
    let released = false;
    return () => {
      if (released) return;
      released = true;
      // The slot passes straight to the first waiter: nobody arriving meanwhile can take it before them.
      const next = this.waiters.shift();
      if (next) {
        this.onWaiting?.(this.waiters.length);
        next.grant();
      } else this.inUse--;
    };
  }
}
