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
 *   following  events flow: the leader looks at the head every `followIntervalMs` itself; the flag says "silent".
 *              After `idleAfterMs` without a new event it asks writers to notify again (flag 1) and drains.
 *   draining   the flag says "notify"; the leader keeps looking (at a pause that doubles up to the poll interval)
 *              until an observation proves that no writer that read "silent" can still commit unseen: then sleeping.
 *   sleeping   the leader waits for a NOTIFY, or `pollIntervalMs` (the fallback: writers that send none, a
 *              listener that is down).
 * A pass that sees a new event (the head or H moved) goes back to following, and the flag to "silent".
 *
 * The proof that no wake-up is lost when the leader goes to sleep. The trigger reads the flag after its statement
 * inserted rows, so a writer W that reads it already holds a transaction id x. Say W read "silent": it did so
 * before the leader's setval to 1 returned. Then the leader takes a snapshot (a later statement) and keeps its xmax
 * as the *fence*: x was assigned before, so x < fence. The leader sleeps only after an observation whose own
 * snapshot has xmin >= fence (the observation reads pg_current_snapshot() in the statement that reads the events):
 * no transaction with an id below the fence was running when that snapshot was taken, so W had ended, and if it
 * committed, its events are visible to that very observation. A writer that reads the flag after the setval reads
 * 1 and notifies on commit. So every commit is seen by a pass after it, or notifies one. The leader does not block
 * on a transaction held open for minutes: it keeps looking (at most `pollIntervalMs` apart) until that one ends.
 *
 * Failing safe: the flag belongs to the leader. A new leader (takeover) starts following and sets "silent"; a leader
 * that dies while following leaves writers silent until the next leader takes over (other instances try at every
 * poll interval), and one that dies sleeping leaves them notifying. No runner at all: writers are silent (`migrate`
 * creates the flag at 0), and a runner that starts reads everything there is.
 */

export type WakeMode = 'following' | 'draining' | 'sleeping';

export interface WakeState {
  mode: WakeMode;
  /** Server time (ms) of the last pass that saw a new event, or of the takeover. */
  lastNewAt: number;
  /** draining: the xmax of a snapshot taken after the flag said "notify"; null until the tracker has taken it. */
  fence: bigint | null;
  /** draining: the pause before the next look. */
  drainDelayMs: number;
}

export interface WakeSettings {
  followIntervalMs: number;
  /** No new event for this long: ask writers to notify, and drain. */
  idleAfterMs: number;
  pollIntervalMs: number;
}

/** What one pass saw: whether the head or H moved, the observation's xmin, the server's clock. */
export interface PassSeen {
  sawNew: boolean;
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
  return { state: { mode: 'following', lastNewAt: now, fence: null, drainDelayMs: 0 }, flag: 'silent', delayMs: settings.followIntervalMs };
}

export function nextWake(state: WakeState, seen: PassSeen, settings: WakeSettings): WakeStep {
  const { followIntervalMs, idleAfterMs, pollIntervalMs } = settings;
  if (seen.sawNew) {
    return {
      state: { mode: 'following', lastNewAt: seen.now, fence: null, drainDelayMs: 0 },
      flag: state.mode === 'following' ? undefined : 'silent',
      delayMs: followIntervalMs,
    };
  }
  switch (state.mode) {
    case 'following':
      if (seen.now - state.lastNewAt < idleAfterMs) return { state, flag: undefined, delayMs: followIntervalMs };
      return {
        state: { ...state, mode: 'draining', fence: null, drainDelayMs: followIntervalMs },
        flag: 'notify',
        delayMs: followIntervalMs,
      };
    case 'draining':
      // The fence is taken after the flag said "notify", and this pass's observation after the fence.
      if (state.fence !== null && seen.xmin !== null && seen.xmin >= state.fence) {
        return { state: { ...state, mode: 'sleeping' }, flag: undefined, delayMs: pollIntervalMs };
      }
      return {
        state: { ...state, drainDelayMs: Math.min(pollIntervalMs, state.drainDelayMs * 2) },
        flag: undefined,
        delayMs: Math.min(pollIntervalMs, state.drainDelayMs),
      };
    case 'sleeping':
      return { state, flag: undefined, delayMs: pollIntervalMs };
  }
}

/** The fence taken after the flag said "notify" (see the proof above). */
export function fenced(state: WakeState, fence: bigint): WakeState {
  return state.mode === 'draining' ? { ...state, fence } : state;
}
