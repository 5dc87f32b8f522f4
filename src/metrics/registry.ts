import client from 'prom-client';

/**
 * Every metric of the runner, defined once with its help text, in an explicit registry (never prom-client's global
 * one, so several runners in one process — tests — do not collide). Names carry their unit, per Prometheus
 * conventions; dashboards and alert rules depend on them (a test checks that they only name metrics defined here).
 */

export const PROJECTION_STATES = ['running', 'catching_up', 'failed', 'stopped', 'replaying'] as const;
export type ProjectionState = (typeof PROJECTION_STATES)[number];

export const GAP_RESOLUTIONS = ['filled', 'timed_out', 'dead'] as const;

/** The `operation` label values of projection_runner_db_errors_total. */
export const DB_OPERATIONS = ['start', 'high_water', 'batch', 'ownership'] as const;

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

  readonly headPosition = new client.Gauge({
    name: 'projection_runner_head_position',
    help: 'Highest committed global position seen.',
    registers: [this.registry],
  });
  readonly highWaterPosition = new client.Gauge({
    name: 'projection_runner_high_water_position',
    help: 'The high-water mark H: every position at or below it is committed or a gap declared dead.',
    registers: [this.registry],
  });
  readonly checkpointPosition = new client.Gauge({
    name: 'projection_runner_checkpoint_position',
    help: "The projection's checkpoint (last global position applied).",
    labelNames: ['projection'],
    registers: [this.registry],
  });
  readonly lagEvents = new client.Gauge({
    name: 'projection_runner_lag_events',
    help: 'Head position minus the projection checkpoint.',
    labelNames: ['projection'],
    registers: [this.registry],
    collect: () => this.collectLag(),
  });
  readonly lagSeconds = new client.Gauge({
    name: 'projection_runner_lag_seconds',
    help: 'Age of the oldest committed event the projection has not applied yet (0 when caught up).',
    labelNames: ['projection'],
    registers: [this.registry],
  });
  readonly eventsApplied = new client.Counter({
    name: 'projection_runner_events_applied_total',
    help: 'Events handed to the projection and committed.',
    labelNames: ['projection'],
    registers: [this.registry],
  });
  readonly batchDuration = new client.Histogram({
    name: 'projection_runner_batch_duration_seconds',
    help: 'Read, handle and commit of one batch.',
    labelNames: ['projection'],
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [this.registry],
  });
  readonly handlerErrors = new client.Counter({
    name: 'projection_runner_handler_errors_total',
    help: 'Handler errors, each failed attempt counted.',
    labelNames: ['projection'],
    registers: [this.registry],
  });
  readonly projectionState = new client.Gauge({
    name: 'projection_runner_projection_state',
    help: ' 1 for the current state of the projection, 0 for the others.',
    labelNames: ['projection', 'state'],
    registers: [this.registry],
  });
  readonly gapsOpen = new client.Gauge({
    name: 'projection_runner_gaps_open',
    help: 'Gaps currently holding the high-water mark.',
    registers: [this.registry],
  });
  readonly gapOldestAge = new client.Gauge({
    name: 'projection_runner_gap_oldest_age_seconds',
    help: 'Age of the oldest open gap (0 when none).',
    registers: [this.registry],
  });
  readonly gapsResolved = new client.Counter({
    name: 'projection_runner_gaps_resolved_total',
    help: 'Gaps resolved, by resolution.',
    labelNames: ['resolution'],
    registers: [this.registry],
  });
  readonly gapWait = new client.Histogram({
    name: 'projection_runner_gap_wait_seconds',
    help: 'Time from the first sighting of a gap to its resolution.',
    labelNames: ['resolution'],
    buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300],
    registers: [this.registry],
  });
  readonly lateEvents = new client.Counter({
    name: 'projection_runner_late_events_total',
    help: 'Events that committed after their gap had been declared dead.',
    registers: [this.registry],
  });
  readonly notifications = new client.Counter({
    name: 'projection_runner_notifications_total',
    help: 'NOTIFY wake-ups received.',
    registers: [this.registry],
  });
  readonly polls = new client.Counter({
    name: 'projection_runner_polls_total',
    help: 'Fallback polls (wake-ups by the poll interval).',
    registers: [this.registry],
  });
  readonly dbErrors = new client.Counter<'operation'>({
    name: 'projection_runner_db_errors_total',
    help: 'Database errors that were retried, by operation.',
    labelNames: ['operation'],
    registers: [this.registry],
  });

  constructor() {
    client.collectDefaultMetrics({ register: this.registry });
    // Zero-valued series exist from the start, so rate() and alerts see them before the first gap.
    for (const resolution of GAP_RESOLUTIONS) this.gapsResolved.inc({ resolution }, 0);
    for (const operation of DB_OPERATIONS) this.dbErrors.inc({ operation }, 0);
    this.lateEvents.inc(0);
  }

  attachLagSource(source: LagSource | undefined): void {
    this.lagSource = source;
  }

  setProjectionState(projection: string, state: ProjectionState): void {
    for (const s of PROJECTION_STATES) this.projectionState.set({ projection, state: s }, s === state ? 1 : 0);
  }

  private async collectLag(): Promise<void> {
    if (!this.lagSource) return;
    try {
      const snapshot = await this.lagSource.lagSnapshot();
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
