import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { sleep } from '../../src/shared/time.js';

/** Starts a sleep and records when it resolved, so a test can tell "not yet" from "done". */
function track(promise: Promise<void>) {
  const state = { done: false };
  void promise.then(() => (state.done = true));
  return state;
}

describe('sleep', () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('resolves after the given time, not before', async () => {
    const slept = track(sleep(1_000));
    await vi.advanceTimersByTimeAsync(999);
    expect(slept.done).toBe(false);
    await vi.advanceTimersByTimeAsync(1);
    expect(slept.done).toBe(true);
  });

  it('ends early when its signal aborts, and clears its timer', async () => {
    const controller = new AbortController();
    const slept = track(sleep(60_000, controller.signal));
    await vi.advanceTimersByTimeAsync(10);
    expect(slept.done).toBe(false);
    controller.abort();
    await vi.advanceTimersByTimeAsync(0);
    expect(slept.done).toBe(true);
    expect(vi.getTimerCount()).toBe(0);
  });

  it('returns at once, without a timer, when the signal is already aborted', async () => {
    const slept = track(sleep(60_000, AbortSignal.abort()));
    expect(vi.getTimerCount()).toBe(0);
    await vi.advanceTimersByTimeAsync(0);
    expect(slept.done).toBe(true);
  });

  it('removes its abort listener when it ends on time', async () => {
    const controller = new AbortController();
    const remove = vi.spyOn(controller.signal, 'removeEventListener');
    const slept = track(sleep(50, controller.signal));
    await vi.advanceTimersByTimeAsync(50);
    expect(slept.done).toBe(true);
    expect(remove).toHaveBeenCalledWith('abort', expect.any(Function));
  });

  it('works without a signal', async () => {
    const slept = track(sleep(5));
    await vi.advanceTimersByTimeAsync(5);
    expect(slept.done).toBe(true);
  });
});
