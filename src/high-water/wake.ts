/**
 * How the high-water leader learns of new events: the sleep/wake protocol. Pure: no I/O, no clock (the server's
 * clock comes with each pass); the tracker (tracker.ts) acts on what it returns, wake-sql.ts writes the flag.
 *
 * Writers wake a sleeping leader with a NOTIFY; but every notifying commit takes PostgreSQL's cluster-wide notify
 * lock, so notifying commits happen one at a time. So writers notify only while the leader sleeps. A flag says
 * which (the `projection_wake_flag` sequence: 1 = notify), read by the events table's trigger in every INSERT
 * statement and set by the leader. A sequence's value is read and set outside any transaction: a writer reads it as
 * it is at that moment, whatever its snapshot (a row would be read as of the writer's snapshot, older than the flip).
 *
 *   following  events flow at `followAbovePerSecond` or more: the leader looks at the head every `followIntervalMs`
 *              itself; the flag says "silent". After `idleAfterMs` without a new event, or a rate window
 *              (RATE_WINDOW_MS) below half that rate, it asks writers to notify again (flag 1) and drains.
 *   draining   the flag says "notify"; the leader keeps looking (at a pause that doubles up to the poll interval)
 *              until an observation proves that no writer that read "silent" can still commit unseen: then sleeping.
 *   sleeping   the leader waits for a NOTIFY, or `pollIntervalMs` (the fallback: writers that send none, a
 *              listener that is down).
 * A pass (woken by a NOTIFY or not) that finds events coming at the following rate goes back to following, and the
 * flag to "silent"; below that rate writers go on notifying, each NOTIFY waking the leader at once: at such rates a
 * notifying commit rarely waits for the notify lock, and a NOTIFY is sooner than any look.
 *
 * The proof that no wake-up is lost when the leader goes to sleep. The trigger reads the flag after its statement
 * inserted rows, so a writer W that reads it already holds a transaction id x. Say W read "silent": it did so
 * before the leader's setval to 1 returned. Then the leader takes a transaction id of its own (a later statement,
 * committed at once) and keeps it as the *fence*: ids are handed out in order and x was handed out before, so
 * x < fence. (A snapshot's xmax would not do: it is one past the latest completed id, and W may hold a higher one.) The leader sleeps only after an observation whose own
 * snapshot has xmin >= fence (the observation reads pg_current_snapshot() in the statement that reads the events):
 * no transaction with an id below the fence was running when that snapshot was taken, so W had ended, and if it
 * committed, its events are visible to that very observation. A writer that reads the flag after the setval reads
 * 1 and notifies on commit. So every commit is seen by a pass after it, or notifies one. The leader does not block
 * on a transaction held open for minutes: it keeps looking (at most `pollIntervalMs` apart) until that one ends.
 * Why it goes to sleep (idle, or a rate that fell) changes nothing: every way into sleeping passes through draining,
 * whose fence is taken after the last flip to "notify"; staying asleep or draining while events come at a low rate
 * leaves the flag at "notify", where every writer notifies.
 *
 * Failing safe: the flag belongs to the leader. A new leader (takeover) starts following and sets "silent"; a leader
 * that dies while following leaves writers silent until the next leader takes over (other instances try at every
 * poll interval), and one that dies sleeping leaves them notifying. No runner at all: writers are silent (`migrate`
 * creates the flag at 0), and a runner that starts reads everything there is.
 */

export type WakeMode = 'following' | 'draining' | 'sleeping';

/** The span over which the leader counts new events to tell the write rate (see `followAbovePerSecond`). */
export const RATE_WINDOW_MS = 100;

export interface WakeState {
  mode: WakeMode;
  /** Server time (ms) of the last pass that saw a new event, or of the takeover. */
  lastNewAt: number;
  /** draining: a transaction id taken after the flag said "notify"; null until the tracker has taken it. */
  fence: bigint | null;
  /** draining: the pause before the next look. */
  drainDelayMs: number;
  /** The write rate: new positions seen since `windowStart` (server ms), over at least RATE_WINDOW_MS. */
  windowStart: number;
  windowEvents: number;
}

export interface WakeSettings {
  followIntervalMs: number;
  /** No new event for this long: ask writers to notify, and drain. */
  idleAfterMs: number;
  pollIntervalMs: number;
  /**
   * The write rate (events per second) from which the leader follows the head: below it writers notify and the
   * leader sleeps between their NOTIFYs (at such rates a notifying commit rarely waits for the notify lock), and a
   * following leader drains once a window's rate falls below half of it. 0: follows whenever events flow.
   */
  followAbovePerSecond: number;
}

/** What one pass saw: whether the head or H moved and by how many positions, the observation's xmin, the server's clock. */
export interface PassSeen {
  sawNew: boolean;
  /** Positions the head (or H) moved by in this pass. */
  newEvents: number;
  xmin: bigint | null;
  now: number;
}

/** The flag to write before the new state holds: writers silent (0) or notifying (1). */
export type FlagChange = 'silent' | 'notify' | undefined;

export interface WakeStep {
  state: WakeState;
  flag: FlagChange;
  /** The pause before the next pass unless woken (the tracker may shorten it for gap deadlines). */
  delayMs: number;
}

/** A leader that takes over follows the head and silences writers (the previous leader's flag may say anything). */
export function takeOverWake(now: number, settings: WakeSettings): WakeStep {
  return {
    state: { mode: 'following', lastNewAt: now, fence: null, drainDelayMs: 0, windowStart: now, windowEvents: 0 },
    flag: 'silent',
    delayMs: settings.followIntervalMs,
  };
}

/**
 * The rate window after this pass: the count goes on until RATE_WINDOW_MS have passed, then a window starts with this
 * pass's events. `closedRate`: the rate (events/s) of the window this pass closed, if it closed one.
 */
export function countEvents(state: WakeState, seen: PassSeen): { windowStart: number; windowEvents: number; closedRate?: number } {
  const elapsed = seen.now - state.windowStart;
  if (elapsed < RATE_WINDOW_MS) return { windowStart: state.windowStart, windowEvents: state.windowEvents + seen.newEvents };
  return { windowStart: seen.now, windowEvents: seen.newEvents, closedRate: (state.windowEvents * 1000) / elapsed };
}

/** Events come at least at the following rate: in the window so far, or over the window this pass closed. */
function busy(window: ReturnType<typeof countEvents>, seen: PassSeen, followAbove: number): boolean {
  if (!seen.sawNew) return false;
  return window.windowEvents >= (followAbove * RATE_WINDOW_MS) / 1000 || (window.closedRate ?? 0) >= followAbove;
}

/**
 * A look that found at least this many new positions: the next one waits twice the follow interval. At 5 ms that
 * is from about 4,800 events/s, and the longer pause keeps it there down to half that rate (a look 10 ms later finds
 * 24 at 2,400/s): fewer, larger looks while writers are busiest. Each look is an observation and a read, and with
 * concurrent writers many of them meet a hole of a transaction still committing (a gap opened, then filled, each
 * written). Following every 10 ms rather than 5 at ~2,000 INSERTs/s of 8 writers took the daemon's statements per
 * 1,000 events from 32 to 24 observations, 31 to 23 reads and 14 to 8 gap transactions (pg_stat_statements).
 */
export const BUSY_LOOK_EVENTS = 24;

/** The pause after a following look that found events: longer when it found many (BUSY_LOOK_EVENTS). */
export function followDelay(seen: PassSeen, followIntervalMs: number): number {
  return seen.newEvents >= BUSY_LOOK_EVENTS ? 2 * followIntervalMs : followIntervalMs;
}

export function nextWake(state: WakeState, seen: PassSeen, settings: WakeSettings): WakeStep {
  const { followIntervalMs, idleAfterMs, pollIntervalMs, followAbovePerSecond } = settings;
  const window = countEvents(state, seen);
  const counted = { ...state, windowStart: window.windowStart, windowEvents: window.windowEvents };
  const toDraining: WakeStep = {
    state: { ...counted, mode: 'draining', fence: null, drainDelayMs: followIntervalMs },
    flag: 'notify',
    delayMs: followIntervalMs,
  };
  switch (state.mode) {
    case 'following':
      // The rate fell: writers notify again (hysteresis: half the rate that started the following).
      if (window.closedRate !== undefined && window.closedRate < followAbovePerSecond / 2) return toDraining;
      if (seen.sawNew) return { state: { ...counted, lastNewAt: seen.now }, flag: undefined, delayMs: followDelay(seen, followIntervalMs) };
      if (seen.now - state.lastNewAt < idleAfterMs) return { state: counted, flag: undefined, delayMs: followIntervalMs };
      return toDraining;
    case 'draining':
    case 'sleeping':
      if (busy(window, seen, followAbovePerSecond)) {
        return {
          state: { ...counted, mode: 'following', lastNewAt: seen.now, fence: null, drainDelayMs: 0 },
          flag: 'silent',
          delayMs: followIntervalMs,
        };
      }
      if (state.mode === 'sleeping') return { state: counted, flag: undefined, delayMs: pollIntervalMs };
      // The fence is taken after the flag said "notify", and this pass's observation after the fence.
      if (state.fence !== null && seen.xmin !== null && seen.xmin >= state.fence) {
        return { state: { ...counted, mode: 'sleeping' }, flag: undefined, delayMs: pollIntervalMs };
      }
      return {
        state: { ...counted, drainDelayMs: Math.min(pollIntervalMs, state.drainDelayMs * 2) },
        flag: undefined,
        delayMs: Math.min(pollIntervalMs, state.drainDelayMs),
      };
  }
}

/** The fence taken after the flag said "notify" (see the proof above). */
export function fenced(state: WakeState, fence: bigint): WakeState {
  return state.mode === 'draining' ? { ...state, fence } : state;
}
