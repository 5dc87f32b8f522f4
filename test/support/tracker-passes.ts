import type { Runner } from '../../src/index.js';

/**
 * For negative tests ("X never happens while Y"): waits until the runner's high-water tracker has run `n` whole passes
 * that began after this call, instead of sleeping a fixed time that a slow machine turns into zero chances and a fast
 * one into wasted seconds. A pass in flight at the call may have read the database before the caller's last step,
 * so it does not count: the counter must move n + 1. Throws when the tracker stalls, so a stalled tracker can never make
 * a negative test pass by default.
 */
export async function waitForTrackerPasses(runner: Pick<Runner, 'positions'>, n: number, timeoutMs = 20_000): Promise<void> {
  if (!Number.isInteger(n) || n < 1) throw new Error(`waitForTrackerPasses: n must be a positive integer, got ${n}`);
  const start = runner.positions.trackerPasses;
  const target = start + n + 1;
  const deadline = Date.now() + timeoutMs;
  while (runner.positions.trackerPasses < target) {
    if (Date.now() > deadline) {
      const ran = runner.positions.trackerPasses - start;
      throw new Error(
        `timed out after ${timeoutMs} ms waiting for ${n} high-water tracker passes (the counter moved ${ran}, needed ${n + 1})`,
      );
    }
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}
