import { describe, expect, it } from 'vitest';
import {
  BUSY_LOOK_EVENTS,
  countEvents,
  fenced,
  nextWake,
  takeOverWake,
  type PassSeen,
  type WakeSettings,
  type WakeState,
  type WakeStep,
} from '../../src/high-water/wake.js';

/** Follows whenever events flow (followAbovePerSecond 0): the protocol's steps alone. */
const settings = { followIntervalMs: 5, idleAfterMs: 50, pollIntervalMs: 1_000, followAbovePerSecond: 0 };
/** Follows from 500 events/s: 50 in a rate window of 100 ms. */
const rated = { ...settings, followAbovePerSecond: 500 };

const window = (windowEvents = 0, windowStart = 0) => ({ windowStart, windowEvents });
const following = (lastNewAt: number, w = window()): WakeState => ({ mode: 'following', lastNewAt, fence: null, drainDelayMs: 0, ...w });
const draining = (fence: bigint | null, drainDelayMs = 5, w = window()): WakeState => ({
  mode: 'draining',
  lastNewAt: 0,
  fence,
  drainDelayMs,
  ...w,
});
const sleeping = (w = window()): WakeState => ({ mode: 'sleeping', lastNewAt: 0, fence: 100n, drainDelayMs: 5, ...w });
const seen = (now: number, sawNew = false, xmin: bigint | null = 50n, newEvents = sawNew ? 1 : 0): PassSeen => ({
  sawNew,
  newEvents,
  xmin,
  now,
});

/** name, state, what the pass saw, and the step expected: mode, flag, pause. */
type StepCase = [string, WakeState, PassSeen, [WakeState['mode'], WakeStep['flag'], number]];

function stepCases(cases: StepCase[], wakeSettings: WakeSettings): void {
  for (const [name, state, pass, [mode, flag, delayMs]] of cases) {
    it(name, () => {
      const step = nextWake(state, pass, wakeSettings);
      expect([step.state.mode, step.flag, step.delayMs]).toEqual([mode, flag, delayMs]);
    });
  }
}

describe('the sleep/wake protocol (nextWake)', () => {
  const cases: StepCase[] = [
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
    ['sleeping, nothing new: sleeps for the poll interval', sleeping(), seen(5_000), ['sleeping', undefined, 1_000]],
    [
      'sleeping, a new event (a NOTIFY or the poll): follows and silences writers',
      sleeping(),
      seen(5_000, true),
      ['following', 'silent', 5],
    ],
  ];
  stepCases(cases, settings);

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
    expect(takeOverWake(7, settings)).toEqual({ state: following(7, window(0, 7)), flag: 'silent', delayMs: 5 });
  });
});

describe('following only from a write rate (followAbovePerSecond)', () => {
  const cases: StepCase[] = [
    [
      'sleeping, a NOTIFY of one event: stays asleep, writers go on notifying',
      sleeping(window(0, 4_990)),
      seen(5_000, true),
      ['sleeping', undefined, 1_000],
    ],
    [
      'sleeping, 49 events within the window: below the rate, asleep',
      sleeping(window(48, 4_950)),
      seen(5_000, true),
      ['sleeping', undefined, 1_000],
    ],
    [
      'sleeping, the 50th event within 100 ms: follows and silences writers',
      sleeping(window(49, 4_950)),
      seen(5_000, true),
      ['following', 'silent', 5],
    ],
    [
      'sleeping, one statement of 50 rows (a bulk load): follows',
      sleeping(window(0, 4_990)),
      seen(5_000, true, 50n, 50),
      ['following', 'silent', 5],
    ],
    [
      'draining, a NOTIFY below the rate: keeps draining toward sleep',
      draining(100n, 5, window(0, 55)),
      seen(60, true, 99n),
      ['draining', undefined, 5],
    ],
    [
      'draining, below the rate, xmin at the fence: sleeps',
      draining(100n, 5, window(0, 55)),
      seen(60, true, 100n),
      ['sleeping', undefined, 1_000],
    ],
    ['draining, events at the rate: follows again', draining(100n, 5, window(60, 0)), seen(60, true, 99n), ['following', 'silent', 5]],
    ['following, a window at the rate closes: keeps following', following(95, window(60, 0)), seen(100, true), ['following', undefined, 5]],
    [
      'following, a window at more than half the rate closes: keeps following',
      following(95, window(26, 0)),
      seen(100, true),
      ['following', undefined, 5],
    ],
    [
      'following, a window below half the rate closes: writers notify again, drains',
      following(95, window(24, 0)),
      seen(100, true),
      ['draining', 'notify', 5],
    ],
  ];
  stepCases(cases, rated);

  it('a following look that found BUSY_LOOK_EVENTS or more waits twice the follow interval', () => {
    expect(nextWake(following(95, window(200, 50)), seen(100, true, 50n, BUSY_LOOK_EVENTS - 1), rated).delayMs).toBe(5);
    expect(nextWake(following(95, window(200, 50)), seen(100, true, 50n, BUSY_LOOK_EVENTS), rated).delayMs).toBe(10);
    // Only while following: a burst that wakes a sleeping leader is followed at the usual pace.
    expect(nextWake(sleeping(), seen(5_000, true, 50n, 500), rated).delayMs).toBe(5);
  });

  it('counts the events of a window, then starts the next with the pass that closes it', () => {
    expect(countEvents(sleeping(window(10, 0)), seen(99, true, 1n, 3))).toEqual({ windowStart: 0, windowEvents: 13 });
    expect(countEvents(sleeping(window(10, 0)), seen(200, true, 1n, 3))).toEqual({ windowStart: 200, windowEvents: 3, closedRate: 50 });
  });
});
