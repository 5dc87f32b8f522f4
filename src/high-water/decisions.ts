/**
 * The decision logic of the high-water tracker. Pure: no I/O, no clock, no timers. The SQL shell
 * (`tracker.ts`) feeds it one observation (one snapshot) at a time, with the server's clock.
 *
 * Definitions
 *   H (high water)  every position <= H is a committed event or lies in a gap declared dead. Projections read <= H.
 *   gap             a run of missing positions with a visible (committed) position above it: its writer is either
 *                   still open (the gap will fill) or rolled back (it never will). Missing positions above the highest
 *                   visible one are not gaps: nothing proves they were ever used by a transaction that is still open,
 *                   and waiting on them would hang after rolled-back appends at the top of the log.
 *   first seen      when a missing position was first observed with a visible position above it. The gap clock starts
 *                   here and is inherited when a gap is split by a partial fill; it never restarts (a clock that
 *                   restarts on "last change" skips live gaps after a lull).
 *   resolutions     filled     every position of the (sub-)range became visible before the gap was given up
 *                   dead       evidence proved no open transaction can still fill it (see evidence.ts)
 *                   timed_out  still missing `gapTimeoutMs` after first seen; H moves past it
 *                   late       a position of a dead/timed-out gap became visible afterwards
 *   watched         a given-up gap is watched for late commits until it is *settled*: proven unfillable by the
 *                   transaction ids PostgreSQL hands out, never by a timer (see `settle` below).
 *
 * Settling, the proof (needs no privilege). Every writer of positions through the column default or the append
 * function has a transaction id before it takes a position (migration 3 makes both call pg_current_xact_id() first).
 * At some moment F after the gap was first seen (plus `fenceDelayMs`, a margin for writers that take a position
 * before their xid, such as an application calling nextval() itself), the tracker takes a fresh xid, the *fence*:
 * every transaction that took a position of the gap has an xid below it. Once an observation's snapshot has
 * xmin >= fence, all of them have ended, and a position still missing in that very snapshot was rolled back: the
 * gap is settled and leaves the watch. Until then it stays watched, however long that takes.
 *
 * A foreign table's writers may take a position before their xid: its column default is a plain nextval(), evaluated
 * before BEFORE ROW triggers and partition routing, so a writer whose trigger waits has a position and no xid yet,
 * and gets an xid above the fence. Such a fence also lists the transactions that were inserting into the table
 * without an xid when it was taken (`writers`, from pg_locks: every INSERT holds the table's RowExclusiveLock from
 * before its default runs until its transaction ends); the gap settles only once each of them has ended too. A
 * writer with an xid at that moment got it before the fence's, and the xmin covers it.
 */

export type Position = bigint;

export type Resolution = 'filled' | 'timed_out' | 'dead' | 'late';

export interface OpenGap {
  from: Position;
  to: Position;
  /** Server time (ms since epoch) of the first sighting. */
  firstSeenAt: number;
}

/** A gap given up on (dead or timed out), watched for late commits until it is settled. */
export interface WatchedGap {
  from: Position;
  to: Position;
  firstSeenAt: number;
  /** An xid taken at least `fenceDelayMs` after the first sighting; null until one is. */
  fence: bigint | null;
  /** A foreign table's writers without an xid when the fence was taken (virtual xids), until they have ended. */
  writers?: string[];
}

/** A fresh transaction id and the server time before it was assigned (statement_timestamp of its statement). */
export interface Fence {
  xid: bigint;
  at: number;
  /** A foreign table only: its writers without an xid, read before the xid was taken (see the header). */
  writers?: string[];
}

export interface HighWaterState {
  highWater: Position;
  /** Highest committed position seen. */
  head: Position;
  /** Sorted by position, all above `highWater`. */
  openGaps: OpenGap[];
  watched: WatchedGap[];
}

export interface Observation {
  /** Server clock, read after the snapshot was taken (an upper bound for "the gap was visible at"). */
  now: number;
  /** Highest committed position in the table. */
  head: Position | null;
  /**
   * Visible positions above `highWater` as a scan window: the first and last visible ones and the missing ranges
   * between them. null when nothing is visible above `highWater`. Positions above `last` are unknown.
   */
  window: { first: Position; last: Position; holes: Array<[Position, Position]> } | null;
  /** Positions inside watched gaps that are now visible. */
  lateVisible: Position[];
  /** xmin of the observation's snapshot: every transaction with a lower xid had ended when it was taken. */
  xmin: bigint | null;
  /** A fence taken before this observation, for watched gaps that have none yet. */
  fence?: Fence;
  /** Of the fences' writers, those still running, read before this observation's snapshot; undefined: none asked. */
  running?: ReadonlySet<string>;
}

export interface ResolvedRange {
  from: Position;
  to: Position;
  firstSeenAt: number;
  resolvedAt: number;
  resolution: Resolution;
}

export interface HighWaterSettings {
  gapTimeoutMs: number;
  /** How long after a gap's first sighting its fence may be taken (see the header). */
  fenceDelayMs: number;
}

export interface Decision {
  state: HighWaterState;
  opened: OpenGap[];
  resolved: ResolvedRange[];
  /** Positions recorded `late` in this pass. */
  late: Position[];
  /** Watched ranges that got their fence in this pass. */
  fenced: WatchedGap[];
  /** Watched ranges proven unfillable in this pass: they leave the watch. */
  settled: WatchedGap[];
  /** True when anything the shell persists changed. */
  changed: boolean;
}

export const initialState = (highWater: Position = 0n, head: Position = highWater): HighWaterState => ({
  highWater,
  head,
  openGaps: [],
  watched: [],
});

type Range = [Position, Position];

/** The missing ranges of a window, including the one between H and the first visible position. */
export function missingRanges(highWater: Position, window: NonNullable<Observation['window']>): Range[] {
  const ranges: Range[] = [];
  if (window.first > highWater + 1n) ranges.push([highWater + 1n, window.first - 1n]);
  for (const hole of window.holes) ranges.push(hole);
  return ranges;
}

/** Parts of `range` not covered by any of the sorted, disjoint `cover` ranges. */
export function subtractRanges(range: Range, cover: Range[]): Range[] {
  const out: Range[] = [];
  let cursor = range[0];
  for (const [from, to] of cover) {
    if (to < cursor || from > range[1]) continue;
    if (from > cursor) out.push([cursor, from - 1n]);
    cursor = to + 1n;
    if (cursor > range[1]) break;
  }
  if (cursor <= range[1]) out.push([cursor, range[1]]);
  return out;
}

function intersect(a: Range, b: Range): Range | null {
  const from = a[0] > b[0] ? a[0] : b[0];
  const to = a[1] < b[1] ? a[1] : b[1];
  return from <= to ? [from, to] : null;
}

/**
 * Folds one observation into the state. `isProvenDead` is the evidence check (always false without evidence).
 */
export function observe(
  state: HighWaterState,
  observation: Observation,
  settings: HighWaterSettings,
  isProvenDead: (gap: OpenGap) => boolean = () => false,
): Decision {
  const { now } = observation;
  const resolved: ResolvedRange[] = [];
  const opened: OpenGap[] = [];
  let openGaps: OpenGap[] = state.openGaps;
  let highWater = state.highWater;
  const head = observation.head !== null && observation.head > state.head ? observation.head : state.head;

  if (observation.window) {
    const { last } = observation.window;
    // Given-up gaps can sit above H (behind a gap still open): they are not new sightings when seen again.
    const givenUp: Range[] = state.watched.map((w): Range => [w.from, w.to]).sort((a, b) => (a[0] < b[0] ? -1 : 1));
    const missing = missingRanges(highWater, observation.window).flatMap((m) => subtractRanges(m, givenUp));
    const next: OpenGap[] = [];
    // Known gaps inside the window: what is no longer missing was filled; what still is keeps its first sighting.
    for (const gap of openGaps) {
      if (gap.from > last) {
        next.push(gap); // beyond what this window saw: unchanged
        continue;
      }
      const stillMissing = missing.map((m) => intersect(m, [gap.from, gap.to])).filter((r): r is Range => r !== null);
      for (const [from, to] of subtractRanges([gap.from, gap.to], stillMissing)) {
        resolved.push({ from, to, firstSeenAt: gap.firstSeenAt, resolvedAt: now, resolution: 'filled' });
      }
      for (const [from, to] of stillMissing) next.push({ from, to, firstSeenAt: gap.firstSeenAt });
    }
    // Missing positions no known gap covers are new sightings.
    const known: Range[] = openGaps.map((g) => [g.from, g.to]);
    for (const range of missing) {
      for (const [from, to] of subtractRanges(range, known)) {
        const gap = { from, to, firstSeenAt: now };
        opened.push(gap);
        next.push(gap);
      }
    }
    next.sort((a, b) => (a.from < b.from ? -1 : 1));
    openGaps = next;
  }

  // Give up on gaps: evidence first (it is the more precise answer), the timeout as the hard cap.
  const newlyGivenUp: WatchedGap[] = [];
  const remaining: OpenGap[] = [];
  for (const gap of openGaps) {
    const resolution = isProvenDead(gap) ? 'dead' : now - gap.firstSeenAt >= settings.gapTimeoutMs ? 'timed_out' : null;
    if (resolution) {
      resolved.push({ from: gap.from, to: gap.to, firstSeenAt: gap.firstSeenAt, resolvedAt: now, resolution });
      newlyGivenUp.push({ from: gap.from, to: gap.to, firstSeenAt: gap.firstSeenAt, fence: null });
    } else {
      remaining.push(gap);
    }
  }
  openGaps = remaining;

  // H: up to just below the first gap still open, or to the last visible position.
  const lastVisible = observation.window?.last ?? highWater;
  const ceiling = openGaps.length > 0 ? openGaps[0]!.from - 1n : lastVisible;
  const candidate = ceiling < lastVisible ? ceiling : lastVisible;
  if (candidate > highWater) highWater = candidate;

  // Late commits in watched gaps: record each once and stop watching that position.
  const late = [...new Set(observation.lateVisible)].sort((a, b) => (a < b ? -1 : 1));
  let stillWatched = state.watched;
  for (const position of late) {
    stillWatched = stillWatched.flatMap((w) =>
      position < w.from || position > w.to
        ? [w]
        : subtractRanges([w.from, w.to], [[position, position]]).map(([from, to]) => ({ ...w, from, to })),
    );
  }
  const old = settle(stillWatched, observation, highWater, settings);
  // A gap given up in this pass may lie beyond the scan window (not observed in this snapshot): it settles next time.
  const fresh = settle(newlyGivenUp, { fence: observation.fence, xmin: null, running: observation.running }, highWater, settings);
  const fenced = [...old.fenced, ...fresh.fenced];
  const settled = old.settled;

  const changed =
    highWater !== state.highWater ||
    head !== state.head ||
    opened.length > 0 ||
    resolved.length > 0 ||
    late.length > 0 ||
    fenced.length > 0 ||
    settled.length > 0;
  return {
    state: { highWater, head, openGaps, watched: [...old.watched, ...fresh.watched] },
    opened,
    resolved,
    late,
    fenced,
    settled,
    changed,
  };
}

/**
 * Whether the observation may move H in its own statement (readObservation's `move`): only with no gap open, since
 * then a run of visible positions right above H is all a pass can move it over, and nothing about gaps changes
 * unless the run has a hole (then the statement moves nothing and the pass persists as before).
 */
export function mayMoveInObservation(state: HighWaterState): boolean {
  return state.openGaps.length === 0;
}

/**
 * Whether `decision` is all persisted once the observation's statement moved H to `movedTo`: nothing but H and the
 * head changed, and H to what that statement wrote (it wrote the head as observe does, the higher of the two).
 * Otherwise persistDecision writes it (H again, to the same value or a higher one, and the gap rows).
 */
export function writtenByObservation(decision: Decision, movedTo: Position | undefined): boolean {
  const gapsChanged =
    decision.opened.length + decision.resolved.length + decision.late.length + decision.fenced.length + decision.settled.length > 0;
  return movedTo !== undefined && !gapsChanged && decision.state.highWater === movedTo;
}

/**
 * Fences and settles watched gaps (see the header). `watched` must already exclude the positions visible in this
 * observation, so what remains of a gap whose fence is at or below the snapshot's xmin was rolled back.
 */
export function settle(
  watched: WatchedGap[],
  observation: Pick<Observation, 'xmin' | 'fence' | 'running'>,
  highWater: Position,
  settings: Pick<HighWaterSettings, 'fenceDelayMs'>,
): { watched: WatchedGap[]; fenced: WatchedGap[]; settled: WatchedGap[] } {
  const { fence, xmin, running } = observation;
  const fenced: WatchedGap[] = [];
  const settled: WatchedGap[] = [];
  const remaining: WatchedGap[] = [];
  for (const gap of watched) {
    let current = gap;
    if (current.fence === null && fence && fence.at >= current.firstSeenAt + settings.fenceDelayMs) {
      current = { ...current, fence: fence.xid, ...(fence.writers ? { writers: fence.writers } : {}) };
      fenced.push(current);
    }
    // Writers never asked about (running undefined) are not known to have ended.
    if (current.writers?.length && running && current.writers.every((w) => !running.has(w))) current = { ...current, writers: [] };
    const writersEnded = !current.writers?.length;
    // Only below H: a given-up gap above H (behind a gap still open) must stay known, or it would be sighted anew.
    if (current.fence !== null && writersEnded && xmin !== null && xmin >= current.fence && current.to <= highWater) settled.push(current);
    else remaining.push(current);
  }
  return { watched: remaining, fenced, settled };
}

/**
 * The watched gaps of a foreign table as a new leader loads them: without their fences, which were persisted without
 * the writers they wait for (see the header). Fenced again, later, which proves as much.
 */
export function withoutFences(watched: WatchedGap[]): WatchedGap[] {
  return watched.map((w) => ({ ...w, fence: null }));
}

/** The writers the fences of `watched` still wait for, and those of a fence just taken. */
export function awaitedWriters(watched: WatchedGap[], fence: Fence | undefined): string[] {
  return [...new Set([...watched.flatMap((w) => w.writers ?? []), ...(fence?.writers ?? [])])];
}

/** Whether the next pass should take a fence: a watched gap without one whose fence delay has passed by `now`. */
export function needsFence(state: HighWaterState, now: number, settings: Pick<HighWaterSettings, 'fenceDelayMs'>): boolean {
  return state.watched.some((w) => w.fence === null && now >= w.firstSeenAt + settings.fenceDelayMs);
}

/** When the next pass must run even if nothing else happens: the earliest gap timeout or fence delay. */
export function nextDeadline(state: HighWaterState, settings: HighWaterSettings): number | null {
  const deadlines = [
    ...state.openGaps.map((gap) => gap.firstSeenAt + settings.gapTimeoutMs),
    ...state.watched.filter((w) => w.fence === null).map((w) => w.firstSeenAt + settings.fenceDelayMs),
  ];
  return deadlines.length === 0 ? null : Math.min(...deadlines);
}

/**
 * How long the tracker may sleep before its next pass unless a notification wakes it: the poll interval, less when
 * a gap times out or a fence is due sooner (1 ms past that deadline, on the server's clock `now`), and no longer
 * than the evidence recheck while gaps are open (a proof can arrive without any commit to wake the tracker).
 */
export function nextPassDelay(
  state: HighWaterState,
  settings: HighWaterSettings,
  now: number,
  pollIntervalMs: number,
  evidenceRecheckMs?: number,
): number {
  const deadline = nextDeadline(state, settings);
  let delay = pollIntervalMs;
  if (deadline !== null) delay = Math.min(delay, Math.max(1, deadline - now + 1));
  if (state.openGaps.length > 0 && evidenceRecheckMs !== undefined) delay = Math.min(delay, evidenceRecheckMs);
  return delay;
}
