import { describe, expect, it } from 'vitest';
import { SlotWaitAbortedError, Slots } from '../../src/shared/slots.js';

/** Records whether a promise has settled yet, so a test can tell "still waiting" from "granted". */
function track<T>(promise: Promise<T>) {
  const state: { value?: T; error?: unknown; settled: boolean } = { settled: false };
  promise.then(
    (value) => Object.assign(state, { value, settled: true }),
    (error: unknown) => Object.assign(state, { error, settled: true }),
  );
  return state;
}

const tick = () => new Promise((resolve) => setImmediate(resolve));

describe('Slots', () => {
  it('grants up to its size at once, then makes the others wait', async () => {
    const slots = new Slots(2);
    const a = track(slots.acquire());
    const b = track(slots.acquire());
    const c = track(slots.acquire());
    await tick();
    expect([a.settled, b.settled, c.settled]).toEqual([true, true, false]);
    expect(slots.busy).toBe(2);
    expect(slots.waiting).toBe(1);
    a.value!();
    await tick();
    expect(c.settled).toBe(true);
    expect(slots.busy).toBe(2);
    expect(slots.waiting).toBe(0);
  });

  it('serves waiters in arrival order, and a newcomer never overtakes them', async () => {
    const slots = new Slots(1);
    const first = await slots.acquire();
    const order: string[] = [];
    const waiters = ['w1', 'w2', 'w3'].map((name) => slots.acquire().then((release) => (order.push(name), release)));
    await tick();
    first();
    // Arrives after the release, before the first waiter has run: must queue behind the three.
    const late = slots.acquire().then((release) => (order.push('late'), release));
    for (const w of waiters) (await w)();
    (await late)();
    expect(order).toEqual(['w1', 'w2', 'w3', 'late']);
    expect(slots.busy).toBe(0);
  });

  it('releases once however often the release is called', async () => {
    const slots = new Slots(1);
    const release = await slots.acquire();
    release();
    release();
    expect(slots.busy).toBe(0);
    const again = await slots.acquire();
    expect(slots.busy).toBe(1);
    const blocked = track(slots.acquire());
    await tick();
    expect(blocked.settled).toBe(false);
    again();
    await tick();
    expect(blocked.settled).toBe(true);
  });

  it('an aborted wait rejects, takes no slot and leaves the queue', async () => {
    const counts: number[] = [];
    const slots = new Slots(1, (waiting) => counts.push(waiting));
    const held = await slots.acquire();
    const controller = new AbortController();
    const aborted = track(slots.acquire(controller.signal));
    const next = track(slots.acquire());
    await tick();
    controller.abort();
    await tick();
    expect(aborted.error).toBeInstanceOf(SlotWaitAbortedError);
    expect(slots.waiting).toBe(1);
    held();
    await tick();
    expect(next.settled).toBe(true);
    expect(slots.busy).toBe(1);
    expect(counts).toEqual([1, 2, 1, 0]);
    await expect(slots.acquire(controller.signal)).rejects.toBeInstanceOf(SlotWaitAbortedError);
  });

  it('run releases the slot when the work throws', async () => {
    const slots = new Slots(1);
    await expect(slots.run(() => Promise.reject(new Error('boom')))).rejects.toThrow('boom');
    expect(slots.busy).toBe(0);
    await expect(slots.run(async () => 7)).resolves.toBe(7);
  });

  it('refuses a size that is not a positive integer', () => {
    expect(() => new Slots(0)).toThrow(RangeError);
    expect(() => new Slots(1.5)).toThrow(RangeError);
  });
});
