import { describe, expect, it } from 'vitest';
import { LatestOnly } from '../../src/shared/latest-only.js';

/** A send that waits until the test lets it finish, so that offers can arrive while it runs. */
function gatedSends() {
  const sent: number[] = [];
  const gates: Array<() => void> = [];
  const send = (value: number) =>
    new Promise<void>((resolve) => {
      sent.push(value);
      gates.push(resolve);
    });
  const finishOne = async () => {
    gates.shift()!();
    await new Promise((resolve) => setImmediate(resolve));
  };
  return { sent, send, finishOne };
}

describe('LatestOnly', () => {
  it('sends the first offer at once and the newest of those offered meanwhile once it ends', async () => {
    const { sent, send, finishOne } = gatedSends();
    const latest = new LatestOnly(send, () => {});
    latest.offer(1);
    latest.offer(2);
    latest.offer(3);
    latest.offer(4);
    expect(sent).toEqual([1]);
    await finishOne();
    expect(sent).toEqual([1, 4]);
    await finishOne();
    await latest.idle();
    expect(sent).toEqual([1, 4]);
    // Idle again: the next offer goes out at once.
    latest.offer(5);
    expect(sent).toEqual([1, 4, 5]);
    await finishOne();
    await latest.idle();
  });

  it('tells a failed send and goes on with the next offer', async () => {
    const errors: unknown[] = [];
    const sent: number[] = [];
    const latest = new LatestOnly(
      async (value: number) => {
        sent.push(value);
        if (value === 1) throw new Error('connection lost');
      },
      (error) => errors.push(error),
    );
    latest.offer(1);
    await latest.idle();
    latest.offer(2);
    await latest.idle();
    expect(sent).toEqual([1, 2]);
    expect(errors).toHaveLength(1);
    expect((errors[0] as Error).message).toBe('connection lost');
  });
});
