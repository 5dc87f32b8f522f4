import client from 'prom-client';
import { PROJECTION_STATES, type ProjectionState } from '../projection/projection.js';

/**
 * Every metric of the runner, defined once with its help text, in an explicit registry (never prom-client's global
 * one, so several runners in one process — tests — do not collide). Names carry their unit, per Prometheus
 * conventions; dashboards and alert rules depend on them (a test checks that they only name metrics defined here).
 */

export const GAP_RESOLUTIONS = ['filled', 'timed_out', 'dead'] as const;

/** The `operation` label values of projection_runner_db_errors_total. */
export const DB_OPERATIONS = ['start', 'high_water', 'batch', 'ownership', 'housekeeping'] as const;

/** Scrape-time figures the registry asks the runner for (lag is computed when scraped, never stale). */
export interface LagSource {
  lagSnapshot(): Promise<{
    head: bigint;
    projections: Array<{ name: string; checkpoint: bigint; oldestUnappliedAgeSeconds: number }>;
  }>;
}

export class RunnerMetrics {
  readonly registry = new client.Registry();
  private lagSource: LagSource | undefined;

  readonly headPosition = this.gauge('projection_runner_head_position', 'Highest committed global position seen.');
  readonly highWaterPosition = this.gauge(
    'projection_runner_high_water_position',
    'The high-water mark H: every position at or below it is committed or a gap declared dead.',
  );
  readonly checkpointPosition = this.gauge(
    'projection_runner_checkpoint_position',
    "The projection's checkpoint (last global position applied).",
    ['projection'],
  );
  // Lag is computed when Prometheus scrapes (collect), never stale.
  readonly lagEvents = this.gauge('projection_runner_lag_events', 'Head position minus the projection checkpoint.', ['projection'], () =>
    this.collectLag(),
  );
  readonly lagSeconds = this.gauge(
    'projection_runner_lag_seconds',
    'Age of the oldest committed event the projection has not applied yet (0 when caught up).',
    ['projection'],
  );
  readonly eventsApplied = this.counter('projection_runner_events_applied_total', 'Events handed to the projection and committed.', [
    'projection',
  ]);
  readonly batchDuration = this.histogram(
    'projection_runner_batch_duration_seconds',
    'Read, handle and commit of one batch.',
    ['projection'],
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
  );
  readonly handlerErrors = this.counter('projection_runner_handler_errors_total', 'Handler errors, each failed attempt counted.', [
    'projection',
  ]);
  readonly deadLetters = this.counter(
    'projection_runner_dead_letters_total',
    'Events set aside in projection_dead_letters (error policy skip, or the skip command) so the projection could go on.',
    ['projection'],
  );
  readonly projectionState = this.gauge(
    'projection_runner_projection_state',
    '1 for the current state of the projection, 0 for the others.',
    ['projection', 'state'],
  );
  readonly gapsOpen = this.gauge('projection_runner_gaps_open', 'Gaps currently holding the high-water mark.');
  readonly gapOldestAge = this.gauge('projection_runner_gap_oldest_age_seconds', 'Age of the oldest open gap (0 when none).');
  readonly gapsResolved = this.counter('projection_runner_gaps_resolved_total', 'Gaps resolved, by resolution.', ['resolution']);
  readonly gapWait = this.histogram(
    'projection_runner_gap_wait_seconds',
    'Time from the first sighting of a gap to its resolution.',
    ['resolution'],
    [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300],
  );
  readonly lateEvents = this.counter(
    'projection_runner_late_events_total',
    'Events that committed after their gap had been declared dead.',
  );
  readonly lateAfterSettled = this.counter(
    'projection_runner_late_after_settled_total',
    'Events the audit found inside a gap proven unfillable (a writer outside the documented assumptions); delivered late.',
  );
  readonly gapsWatched = this.gauge(
    'projection_runner_gaps_watched',
    'Given-up gaps still watched for late commits (until proven unfillable by the transaction ids).',
  );
  readonly eventReads = this.counter(
    'projection_runner_event_reads_total',
    'Reads of the event table: pages of the shared reader (each serves every projection at its place; read-aheads included) and the own reads of caught-up projections.',
  );
  readonly wakeUps = this.counter(
    'projection_runner_wakeups_total',
    "Times this instance woke its projectors because H moved (its own tracker, or the leader's NOTIFY): with event_reads_total, the reads per live wake-up.",
  );
  readonly batchesWaiting = this.gauge(
    'projection_runner_batches_waiting',
    'Batches waiting for a slot (--max-concurrent-batches): above zero most of the time, the bound holds the projections back.',
  );
  readonly notifications = this.counter('projection_runner_notifications_total', 'NOTIFY wake-ups received.');
  readonly polls = this.counter('projection_runner_polls_total', 'Fallback polls (wake-ups by the poll interval).');
  readonly highWaterPass = this.histogram(
    'projection_runner_high_water_pass_seconds',
    "One pass of the high-water tracker (the leader's observation, decision and write; a follower's read of H).",
    [],
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
  );
  readonly housekeepingSeconds = this.histogram(
    'projection_runner_housekeeping_seconds',
    'Housekeeping runs (the audit of settled gaps and the pruning of the gap history, on the leader, off the high-water pass), by outcome.',
    ['outcome'],
    [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600],
  );
  readonly housekeepingBacklog = this.gauge(
    'projection_runner_housekeeping_backlog_gaps',
    'What housekeeping left at the end of its last run: settled gaps whose audit is due (task audit), gap rows past --gap-history not pruned yet (task prune, including those a projection still needs).',
    ['task'],
  );
  readonly housekeepingLongestStatement = this.gauge(
    'projection_runner_housekeeping_longest_statement_seconds',
    "The longest statement of housekeeping's last completed run (each is bounded by a chunk and by its statement_timeout).",
  );
  readonly dbErrors = this.counter('projection_runner_db_errors_total', 'Database errors that were retried, by operation.', ['operation']);

  constructor() {
    client.collectDefaultMetrics({ register: this.registry });
    // Zero-valued series exist from the start, so rate() and alerts see them before the first gap.
    for (const resolution of GAP_RESOLUTIONS) this.gapsResolved.inc({ resolution }, 0);
    for (const operation of DB_OPERATIONS) this.dbErrors.inc({ operation }, 0);
    this.lateEvents.inc(0);
    this.lateAfterSettled.inc(0);
    // Both outcomes from the start: the alert on housekeeping that only fails needs the series of the runs that did not.
    for (const outcome of ['done', 'failed']) this.housekeepingSeconds.zero({ outcome });
  }

  private gauge<L extends string>(name: string, help: string, labelNames: L[] = [], collect?: () => Promise<void>) {
    return new client.Gauge<L>({ name, help, labelNames, registers: [this.registry], ...(collect ? { collect } : {}) });
  }

  private counter<L extends string>(name: string, help: string, labelNames: L[] = []) {
    return new client.Counter<L>({ name, help, labelNames, registers: [this.registry] });
  }

  private histogram<L extends string>(name: string, help: string, labelNames: L[], buckets: number[]) {
    return new client.Histogram<L>({ name, help, labelNames, buckets, registers: [this.registry] });
  }

  attachLagSource(source: LagSource | undefined): void {
    this.lagSource = source;
  }

  setProjectionState(projection: string, state: ProjectionState): void {
    // Every batch says its state: the six series are written only when it changed (a batch is often a few µs of work).
    if (this.statesSet.get(projection) === state) return;
    this.statesSet.set(projection, state);
    for (const s of PROJECTION_STATES) this.projectionState.set({ projection, state: s }, s === state ? 1 : 0);
  }

  /** The state each projection's series were last set to (setProjectionState). */
  private readonly statesSet = new Map<string, ProjectionState>();

  /**
   * Every metric with a `projection` label, for forgetProjection. A new per-projection metric belongs here (a unit
   * test checks that none is missed).
   */
  private perProjection() {
    return [
      this.checkpointPosition,
      this.lagEvents,
      this.lagSeconds,
      this.eventsApplied,
      this.batchDuration,
      this.handlerErrors,
      this.deadLetters,
    ];
  }

  /**
   * This instance gave the projection up (balancing, a lost lease, failover, stop): its series go. Only the owner
   * exports a projection, so an alert on a stale value (lag, failed) clears when the condition does, instead of
   * firing for ever from an instance that stopped looking. The new owner's counters start again from 0, which
   * rate() and increase() read as a counter reset.
   */
  forgetProjection(projection: string): void {
    this.statesSet.delete(projection);
    for (const metric of this.perProjection()) metric.remove({ projection });
    for (const state of PROJECTION_STATES) this.projectionState.remove({ projection, state });
  }

  private async collectLag(): Promise<void> {
    if (!this.lagSource) return;
    try {
      const snapshot = await this.lagSource.lagSnapshot();
      // Exactly the projections owned at this scrape: none left over from one given up since the last scrape.
      this.lagEvents.reset();
      this.lagSeconds.reset();
      for (const p of snapshot.projections) {
        const lag = snapshot.head > p.checkpoint ? snapshot.head - p.checkpoint : 0n;
        this.lagEvents.set({ projection: p.name }, Number(lag));
        this.lagSeconds.set({ projection: p.name }, p.oldestUnappliedAgeSeconds);
      }
    } catch {
      // The database is away: keep the last values; db_errors and /readyz tell the story.
    }
  }
}
