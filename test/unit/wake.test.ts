import { describe, expect, it } from 'vitest';
import { fenced, nextWake, takeOverWake, type PassSeen, type WakeState, type WakeStep } from '../../src/high-water/wake.js';

const settings = { followIntervalMs: 5, idleAfterMs: 50, pollIntervalMs: 1_000 };

const following = (lastNewAt: number): WakeState => ({ mode: 'following', lastNewAt, fence: null, drainDelayMs: 0 });
const draining = (fence: bigint | null, drainDelayMs = 5): WakeState => ({ mode: 'draining', lastNewAt: 0, fence, drainDelayMs });
const sleeping: WakeState = { mode: 'sleeping', lastNewAt: 0, fence: 100n, drainDelayMs: 5 };
const seen = (now: number, sawNew = false, xmin: bigint | null = 50n): PassSeen => ({ sawNew, xmin, now });

describe('the sleep/wake protocol (nextWake)', () => {
  /** name, state, what the pass saw, and the step expected: mode, flag, pause. */
  const cases: Array<[string, WakeState, PassSeen, [WakeState['mode'], WakeStep['flag'], number]]> = [
    ['following, a new event: keeps following, flag untouched', following(0), seen(30, true), ['following', undefined, 5]],
    ['following, nothing new for less than idleAfter: keeps looking', following(0), seen(49), ['following', undefined, 5]],
    ['following, nothing new for idleAfter: asks writers to notify and drains', following(0), seen(50), ['draining', 'notify', 5]],
    ['draining without a fence yet: keeps looking', draining(null), seen(60, false, 1_000n), ['draining', undefined, 5]],
    [
      'draining, xmin below the fence (a writer that read "silent" may still commit): keeps looking',
      draining(100n),
      seen(60, false, 99n),
      ['draining', undefined, 5],
    ],
    ['draining, the look after the pause doubles', draining(100n, 40), seen(60, false, 99n), ['draining', undefined, 40]],
    ['draining, never paused longer than the poll interval', draining(100n, 1_600), seen(60, false, 99n), ['draining', undefined, 1_000]],
    [
      'draining, xmin at the fence: that observation was the last look, sleeps',
      draining(100n),
      seen(60, false, 100n),
      ['sleeping', undefined, 1_000],
    ],
    ['draining, no xmin read: keeps looking', draining(100n), seen(60, false, null), ['draining', undefined, 5]],
    ['draining, a new event: follows again and silences writers', draining(100n), seen(60, true, 200n), ['following', 'silent', 5]],
    ['sleeping, nothing new: sleeps for the poll interval', sleeping, seen(5_000), ['sleeping', undefined, 1_000]],
    ['sleeping, a new event (a NOTIFY or the poll): follows and silences writers', sleeping, seen(5_000, true), ['following', 'silent', 5]],
  ];
  for (const [name, state, pass, [mode, flag, delayMs]] of cases) {
    it(name, () => {
      const step = nextWake(state, pass, settings);
      expect([step.state.mode, step.flag, step.delayMs]).toEqual([mode, flag, delayMs]);
    });
  }

  it('a new event restarts the idle clock', () => {
    const step = nextWake(following(0), seen(40, true), settings);
    expect(nextWake(step.state, seen(80), settings).state.mode).toBe('following');
    expect(nextWake(step.state, seen(90), settings).state.mode).toBe('draining');
  });

  it('a drain starts without a fence: the fence is the one taken after the flag was written, never an older one', () => {
    const asked = nextWake(following(0), seen(50), settings).state;
    expect(asked.fence).toBeNull();
    expect(fenced(asked, 300n).fence).toBe(300n);
    // A second drain after following again starts over: the first fence proves nothing about the second flip.
    const again = nextWake(nextWake(fenced(asked, 300n), seen(60, true), settings).state, seen(200), settings).state;
    expect(again).toMatchObject({ mode: 'draining', fence: null });
    expect(fenced(following(0), 300n).fence).toBeNull();
  });

  it('a leader that takes over follows and silences writers, whatever the flag says', () => {
    expect(takeOverWake(7, settings)).toEqual({ state: following(7), flag: 'silent', delayMs: 5 });
  });
});
