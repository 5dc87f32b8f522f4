import type pg from 'pg';
import type { Logger } from 'pino';
import type { StoreNames } from '../db/identifiers.js';
import type { RunnerMetrics } from '../metrics/registry.js';
import { sleep } from '../shared/time.js';
import {
  auditAgain,
  FOUND_CHUNK,
  markAudited,
  pruneFilled,
  pruneGaps,
  readBacklog,
  readDueAudits,
  readFoundAfter,
  readPrunable,
  recordFoundLate,
} from './housekeeping-sql.js';

/** Audits of a settled gap on its schedule (the audit before pruning comes on top). */
export const SCHEDULED_AUDITS = 5;
/** Each scheduled audit waits this many times longer than the one before. */
export const AUDIT_GROWTH = 4;
/** Gap rows per statement: each statement probes or deletes about this many ranges, whatever the history holds. */
export const AUDIT_CHUNK = 1000;
/**
 * After each statement housekeeping rests this many times as long as the statement took: on a catch-up (an upgrade's
 * whole history due at once) it then takes at most a fifth of the time of the server it shares with the projectors'
 * batches, which a two-core server otherwise gave to it first. Measured on figure (13) at full size: live p99 166 ms
 * while catching up without a rest, 29 ms resting 2x, 20 ms resting 4x (the catch-up 24 s, 53 s, 176 s).
 */
export const REST_PER_STATEMENT = 4;
export const PRUNE_CHUNK = 500;

/**
 * The delays between the scheduled audits of a settled gap: the first is due when it settles (found by the next run,
 * within `intervalMs`), each next one `AUDIT_GROWTH` times later than the one before: with a minute, about 4 min,
 * 16 min, 64 min and 4.3 h after the one before. So each gap costs a bounded number of index probes (the minute audit
 * of every gap for the whole history cost 10,080 each), and a row written into a gap is found within about four
 * times its age at that moment, or by the audit before pruning at the latest. `delays[n - 1]` follows audit n.
 */
export function auditDelays(intervalMs: number, audits = SCHEDULED_AUDITS, growth = AUDIT_GROWTH): number[] {
  return Array.from({ length: Math.max(0, audits - 1) }, (_, i) => intervalMs * growth ** (i + 1));
}

export interface HousekeepingOptions {
  /** Housekeeping's own session (one connection, statement_timeout on it): never the tracker's. */
  pool: pg.Pool;
  names: StoreNames;
  /** This instance's name: the leader check of the late rows' insert. */
  owner: string;
  /** Housekeeping runs on the tracker's leader only. */
  isLeader: () => boolean;
  log: Logger;
  metrics: RunnerMetrics;
  gapHistoryMs: number;
  /** How often a run starts (and how soon a failed one is tried again). */
  intervalMs: number;
  /** Late rows were recorded: wake the projectors. */
  onLate: () => void;
}

interface RunReport {
  audited: number;
  found: number;
  pruned: number;
  statements: number;
  longestStatementMs: number;
}

/**
 * The audit of settled gaps and the pruning of the gap history, in a loop of their own, on the leader, on their own
 * session: the high-water pass never waits for them. A run catches up with what is due in chunks (each statement
 * bounded by a chunk, and by the session's statement_timeout); a failed run is logged, counted and tried again at the
 * next interval, and delays nothing but housekeeping.
 */
export class Housekeeping {
  constructor(private readonly options: HousekeepingOptions) {}

  async run(signal: AbortSignal): Promise<void> {
    const { log, metrics, intervalMs } = this.options;
    while (!signal.aborted) {
      if (this.options.isLeader()) {
        const started = performance.now();
        const report: RunReport = { audited: 0, found: 0, pruned: 0, statements: 0, longestStatementMs: 0 };
        try {
          await this.catchUp(report, signal);
          const seconds = (performance.now() - started) / 1000;
          metrics.housekeepingSeconds.observe({ outcome: 'done' }, seconds);
          metrics.housekeepingLongestStatement.set(report.longestStatementMs / 1000);
          const line = { durationMs: Math.round(seconds * 1000), ...report, longestStatementMs: Math.round(report.longestStatementMs) };
          if (report.statements > 3 || report.found > 0) log.info(line, 'housekeeping run');
          else log.debug(line, 'housekeeping run');
        } catch (error) {
          if (signal.aborted) break;
          const seconds = (performance.now() - started) / 1000;
          metrics.housekeepingSeconds.observe({ outcome: 'failed' }, seconds);
          metrics.dbErrors.inc({ operation: 'housekeeping' });
          log.error(
            { err: error, durationMs: Math.round(seconds * 1000), ...report },
            'housekeeping failed (gap audit or history pruning); the high-water mark is not held up; trying again at the next interval',
          );
        }
      }
      // Not leading (yet: the tracker's first pass takes the lead): look again soon rather than a whole interval later.
      await sleep(this.options.isLeader() ? intervalMs : Math.min(intervalMs, 1_000), signal);
    }
  }

  /** Every due audit, then every prunable gap, chunk by chunk; then the backlog left. */
  private async catchUp(report: RunReport, signal: AbortSignal): Promise<void> {
    const { pool, names, gapHistoryMs, metrics } = this.options;
    // The rest is taken before the next statement, not after this one: what a statement did (late rows found, counted
    // and announced) is reported at once.
    let rest = 0;
    const timed = async <T>(statement: () => Promise<T>): Promise<T> => {
      await sleep(rest, signal);
      const started = performance.now();
      try {
        return await statement();
      } finally {
        const took = performance.now() - started;
        report.statements++;
        report.longestStatementMs = Math.max(report.longestStatementMs, took);
        rest = took * REST_PER_STATEMENT;
      }
    };
    const delays = auditDelays(this.options.intervalMs);
    for (;;) {
      if (signal.aborted || !this.options.isLeader()) return;
      const chunk = await timed(() => readDueAudits(pool, names, AUDIT_CHUNK));
      await this.recordFound(chunk.found, report, timed);
      // A gap with more found than a chunk (rows loaded into its range in bulk): the audit goes on above the last.
      for (const gap of chunk.unfinished) {
        for (let after = gap.after; ;) {
          if (signal.aborted || !this.options.isLeader()) return;
          const next = await timed(() => readFoundAfter(pool, names, gap.id, after));
          await this.recordFound(next.found, report, timed);
          if (next.complete) break;
          after = next.found.at(-1)!;
        }
      }
      await timed(() => markAudited(pool, names, chunk.ids, delays));
      report.audited += chunk.ids.length;
      if (chunk.ids.length < AUDIT_CHUNK) break;
    }
    for (;;) {
      if (signal.aborted || !this.options.isLeader()) return;
      const chunk = await timed(() => readPrunable(pool, names, gapHistoryMs, PRUNE_CHUNK));
      // The audit before pruning: a gap with something found stays (its new late record keeps it for the history).
      const found = chunk.gaps.flatMap((g) => g.found);
      await this.recordFound(found, report, timed);
      // Its late rows keep it past this audit, so the next run's audit finishes looking into it.
      await timed(() =>
        auditAgain(
          pool,
          names,
          chunk.gaps.filter((g) => g.found.length > 0).map((g) => g.id),
        ),
      );
      const doomed = chunk.gaps.filter((g) => g.found.length === 0).map((g) => g.id);
      report.pruned += await timed(() => pruneGaps(pool, names, doomed));
      if (chunk.gaps.length < PRUNE_CHUNK) break;
    }
    for (;;) {
      if (signal.aborted) return;
      const removed = await timed(() => pruneFilled(pool, names, gapHistoryMs, PRUNE_CHUNK));
      report.pruned += removed;
      if (removed < PRUNE_CHUNK) break;
    }
    const backlog = await timed(() => readBacklog(pool, names, gapHistoryMs));
    metrics.housekeepingBacklog.set({ task: 'audit' }, backlog.audit);
    metrics.housekeepingBacklog.set({ task: 'prune' }, backlog.prune);
  }

  private async recordFound(positions: bigint[], report: RunReport, timed: <T>(statement: () => Promise<T>) => Promise<T>): Promise<void> {
    if (positions.length === 0) return;
    const { pool, names, owner, log, metrics } = this.options;
    // In chunks, lowest first, each a short transaction under the high-water row lock (recordFoundLate).
    const sorted = [...positions].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
    const recorded: bigint[] = [];
    for (let i = 0; i < sorted.length; i += FOUND_CHUNK) {
      const chunk = sorted.slice(i, i + FOUND_CHUNK);
      recorded.push(...(await timed(() => recordFoundLate(pool, names, owner, chunk))));
    }
    for (const position of recorded) {
      metrics.lateEvents.inc();
      metrics.lateAfterSettled.inc();
      log.error(
        { position: position.toString() },
        'event found inside a gap proven unfillable (its writer held a position without a transaction id, or chose its own position): recorded late and delivered to projections that passed it',
      );
    }
    report.found += recorded.length;
    if (recorded.length > 0) this.options.onLate();
  }
}
