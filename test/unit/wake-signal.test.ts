import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { WakeSignal } from '../../src/shared/wake-signal.js';

type Outcome = 'notified' | 'timeout' | 'aborted';

/** Starts a wait and records its outcome as soon as it settles, so a test can tell "not yet" from "done". */
function track(promise: Promise<Outcome>) {
  const state: { outcome: Outcome | undefined } = { outcome: undefined };
  void promise.then((outcome) => (state.outcome = outcome));
  return state;
}

describe('WakeSignal', () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('times out after the given time when nothing notifies', async () => {
    const wake = new WakeSignal();
    const wait = track(wake.wait(100));
    await vi.advanceTimersByTimeAsync(99);
    expect(wait.outcome).toBeUndefined();
    await vi.advanceTimersByTimeAsync(1);
    expect(wait.outcome).toBe('timeout');
    expect(vi.getTimerCount()).toBe(0);
  });

  it('a negative time is a zero timeout, not a wait for ever', async () => {
    const wake = new WakeSignal();
    const wait = track(wake.wait(-5));
    await vi.advanceTimersByTimeAsync(0);
    expect(wait.outcome).toBe('timeout');
  });

  it('notify wakes a waiter at once and clears its timer', async () => {
    const wake = new WakeSignal();
    const wait = track(wake.wait(60_000));
    await vi.advanceTimersByTimeAsync(10);
    expect(wait.outcome).toBeUndefined();
    wake.notify();
    await vi.advanceTimersByTimeAsync(0);
    expect(wait.outcome).toBe('notified');
    expect(vi.getTimerCount()).toBe(0);
  });

  it('notify wakes every current waiter, and is not remembered once it woke someone', async () => {
    const wake = new WakeSignal();
    const first = track(wake.wait(1_000));
    const second = track(wake.wait(1_000));
    wake.notify();
    await vi.advanceTimersByTimeAsync(0);
    expect([first.outcome, second.outcome]).toEqual(['notified', 'notified']);
    const later = track(wake.wait(50));
    await vi.advanceTimersByTimeAsync(50);
    expect(later.outcome).toBe('timeout');
  });

  it('a notify with nobody waiting is remembered: the next wait returns at once (no lost wake-up)', async () => {
    const wake = new WakeSignal();
    wake.notify();
    await expect(wake.wait(60_000)).resolves.toBe('notified');
    expect(vi.getTimerCount()).toBe(0);
  });

  it('level-triggered: several notifies with nobody waiting wake one wait, not one each', async () => {
    const wake = new WakeSignal();
    wake.notify();
    wake.notify();
    wake.notify();
    await expect(wake.wait(1_000)).resolves.toBe('notified');
    const next = track(wake.wait(1_000));
    await vi.advanceTimersByTimeAsync(1_000);
    expect(next.outcome).toBe('timeout');
  });

  it('a waiter that timed out is gone: a later notify is remembered for the next wait', async () => {
    const wake = new WakeSignal();
    const timedOut = track(wake.wait(10));
    await vi.advanceTimersByTimeAsync(10);
    expect(timedOut.outcome).toBe('timeout');
    wake.notify();
    await expect(wake.wait(1_000)).resolves.toBe('notified');
  });

  it('an abort ends the wait at once, clears its timer and leaves no waiter behind', async () => {
    const wake = new WakeSignal();
    const controller = new AbortController();
    const wait = track(wake.wait(60_000, controller.signal));
    await vi.advanceTimersByTimeAsync(10);
    controller.abort();
    await vi.advanceTimersByTimeAsync(0);
    expect(wait.outcome).toBe('aborted');
    expect(vi.getTimerCount()).toBe(0);
    // The aborted waiter no longer listens: this notify has nobody to wake and is remembered.
    wake.notify();
    await expect(wake.wait(1_000)).resolves.toBe('notified');
  });

  it('an already aborted signal returns aborted without waiting, and keeps a pending notify for later', async () => {
    const wake = new WakeSignal();
    wake.notify();
    await expect(wake.wait(60_000, AbortSignal.abort())).resolves.toBe('aborted');
    expect(vi.getTimerCount()).toBe(0);
    await expect(wake.wait(60_000)).resolves.toBe('notified');
  });

  it('removes its abort listener when it ends another way', async () => {
    const wake = new WakeSignal();
    const controller = new AbortController();
    const remove = vi.spyOn(controller.signal, 'removeEventListener');
    const notified = wake.wait(1_000, controller.signal);
    wake.notify();
    await expect(notified).resolves.toBe('notified');
    const timedOut = wake.wait(10, controller.signal);
    await vi.advanceTimersByTimeAsync(10);
    await expect(timedOut).resolves.toBe('timeout');
    expect(remove.mock.calls.map(([type]) => type)).toEqual(['abort', 'abort']);
    // An abort after both ended changes nothing.
    controller.abort();
    await expect(Promise.all([notified, timedOut])).resolves.toEqual(['notified', 'timeout']);
  });
});
