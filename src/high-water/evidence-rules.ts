import type { OpenGap } from './decisions.js';

/**
 * Pure rules that decide whether a gap is provably dead: no transaction that could still commit its positions is
 * open. The reasoning, for a gap at positions p..q first seen at T (server clock, read after the snapshot that saw
 * a visible position above it):
 *
 * 1. The values of a CACHE 1 sequence (or a reserved range) are handed out in order, so whoever took p (X) took it
 *    before the writer of the visible position above took its value; that writer committed before T's snapshot.
 *    Hence X began before T.
 * 2. If no session of this database that began its transaction before T is still open, X has ended. If p is still
 *    missing in a snapshot taken after that check, X rolled back: the gap is dead.
 * 3. Sessions that cannot be X do not hold the gap: the runner's own that never write events (the tracker's, the
 *    listener's, the leases'; the sessions where projection handlers run are NOT excluded: a handler may append);
 *    those whose transaction began at or after T; those idle in transaction (aborted or not) since before p was
 *    handed out (the sequence had not reached p when they last did anything). An aborted transaction is NOT ruled
 *    out by itself: ROLLBACK TO SAVEPOINT revives it, and rows written before the savepoint then commit.
 * 4. A prepared (two-phase) transaction prepared after p was handed out may hold p until COMMIT/ROLLBACK PREPARED.
 * 5. A session whose details we may not see (no pg_read_all_stats) or that reports nothing (track_activities = off:
 *    state 'disabled') could be anything: it holds the gap. Missing evidence never proves death.
 */

export interface SessionInfo {
  /** ms since epoch; null when hidden from us (insufficient privilege). */
  xactStart: number | null;
  state: string | null;
  stateChange: number | null;
}

export interface EvidenceSnapshot {
  /** Server clock when the evidence was read (statement start). */
  takenAt: number;
  sessions: SessionInfo[];
  /** Prepared transactions of this database: when each was prepared. */
  preparedAt: number[];
}

/** (time, sequence last value) samples: at `at`, no value above `lastValue` had been handed out yet. */
export interface SequenceSample {
  at: number;
  lastValue: bigint;
}

/** The latest time at which position p had certainly not been handed out; -Infinity when unknown. */
export function handedOutAfter(position: bigint, samples: readonly SequenceSample[]): number {
  let latest = Number.NEGATIVE_INFINITY;
  for (const s of samples) if (s.lastValue < position && s.at > latest) latest = s.at;
  return latest;
}

export function isProvenDead(gap: OpenGap, evidence: EvidenceSnapshot, samples: readonly SequenceSample[]): boolean {
  // Evidence older than the sighting says nothing about this gap.
  if (evidence.takenAt <= gap.firstSeenAt) return false;
  const notBefore = handedOutAfter(gap.from, samples);
  for (const session of evidence.sessions) {
    if (session.xactStart === null || session.state === null || session.state === 'disabled') return false; // could be X
    if (session.xactStart >= gap.firstSeenAt) continue; // began after the sighting: cannot be X
    const idle = session.state === 'idle in transaction' || session.state === 'idle in transaction (aborted)';
    if (idle && session.stateChange !== null && session.stateChange < notBefore) continue; // quiet since before p existed
    return false;
  }
  for (const prepared of evidence.preparedAt) if (prepared >= notBefore) return false;
  return true;
}

/** Keeps the samples that can still matter: the newest one below each open gap, and the latest overall. */
export function pruneSamples(samples: SequenceSample[], openGaps: readonly OpenGap[], keep = 64): SequenceSample[] {
  if (samples.length <= keep) return samples;
  const needed = new Set<SequenceSample>([samples.at(-1)!]);
  for (const gap of openGaps) {
    let best: SequenceSample | undefined;
    for (const s of samples) if (s.lastValue < gap.from && (!best || s.at > best.at)) best = s;
    if (best) needed.add(best);
  }
  const recent = samples.slice(-keep);
  return samples.filter((s) => needed.has(s) || recent.includes(s));
}
