/**
 * What this instance knows of the waits pending in any process (src/wait/): the highest position waited for, until
 * when (the waiters renew it while their waits are pending). One per instance (the Runner's): the tracker's passes
 * tell it what they read (`learn`), the projectors ask it (`upTo`, `pending`). Time is performance.now() here.
 */
export class WaitedPosition {
  private position: bigint | undefined;
  private until = 0;

  /**
   * What a pass read: the highest position waited for and how long that holds, or undefined (none pending). Returns
   * true when it is news the projectors must hear at once: a wait pending where none was, or a higher position (a
   * move they left in memory may be what it waits for: deferral.ts waitNeedsMove).
   */
  learn(waited: { position: bigint; remainingMs: number } | undefined, now = performance.now()): boolean {
    const before = this.upTo(now);
    if (waited === undefined) {
      this.position = undefined;
      this.until = 0;
      return false;
    }
    this.position = waited.position;
    this.until = now + waited.remainingMs;
    return before === undefined || waited.position > before;
  }

  /** The highest position waited for, or undefined when no wait is pending. */
  upTo(now = performance.now()): bigint | undefined {
    return this.position !== undefined && now < this.until ? this.position : undefined;
  }

  /** Whether a wait is pending: the projectors then tell the waiters of every checkpoint they write. */
  get pending(): boolean {
    return this.upTo() !== undefined;
  }
}
