import { createHash } from 'node:crypto';
import { setMaxListeners } from 'node:events';
import type pg from 'pg';
import type { Logger } from 'pino';
import { resolveRunnerSettings, type RunnerSettings } from '../config.js';
import { createPool } from '../db/connection.js';
import { storeNames, type StoreNames } from '../db/identifiers.js';
import { RunnerMetrics, type LagSource } from '../metrics/registry.js';
import type { HealthSource } from '../metrics/server.js';
import { createCheckpointRow } from '../projector/checkpoints.js';
import { oldestUnappliedAges } from '../sources/native.js';
import { BatchContexts } from '../projector/batch-contexts.js';
import { WaitedPosition } from '../projector/waited.js';
import { SharedReader } from '../sources/shared-reader.js';
import { createGapEvidence } from '../high-water/evidence.js';
import { HighWaterTracker } from '../high-water/tracker.js';
import { Housekeeping } from '../high-water/housekeeping.js';
import { LeaseSession } from '../ownership/leases.js';
import { checkUniqueNames, validateProjection, type Projection } from '../projection/projection.js';
import { withRetries } from '../db/retry.js';
import { Slots } from '../shared/slots.js';
import { WakeSignal } from '../shared/wake-signal.js';
import { NotificationListener } from './listener.js';
import { OwnedProjections } from './owned-projections.js';
import { OwnershipLoop } from './ownership-loop.js';
import type { Projector } from '../projector/projector.js';
import type { WakeMode } from '../high-water/wake.js';
import { prepareStore } from '../sources/prepare.js';
import { buildsToRun, moduleVersion, type BuildUnit } from '../versions/builds.js';
import { readBuilds, syncBuilds } from '../versions/builds-sql.js';

/**
 * A Runner's options. The settings (batch size, gap timeout, …) are those of the CLI, with the same defaults and
 * checks (config.ts, SETTINGS): a bad value stops the constructor with a ConfigError naming the setting.
 */
export interface RunnerOptions extends Partial<RunnerSettings> {
  connectionString: string;
  projections: Projection[];
  log: Logger;
  metrics?: RunnerMetrics;
  /** How often the leader audits settled gaps and prunes the gap history (default 60 s; tests shorten it). */
  maintenanceIntervalMs?: number;
  /** The statement_timeout of housekeeping's statements (default 10 s; tests shorten it). */
  housekeepingStatementTimeoutMs?: number;
}

/**
 * Composes the daemon: migrations, the high-water tracker, the notification listener, ownership of projections
 * (advisory-lock leases, balanced across instances) and one projector loop per owned projection.
 * `start()` and `stop()` are safe to call twice.
 */
export class Runner implements LagSource, HealthSource {
  private readonly names: StoreNames;
  readonly metrics: RunnerMetrics;
  /** Projectors, ownership, replays: sessions that may write events (handlers), visible to gap evidence. */
  private readonly pool: pg.Pool;
  /** The high-water tracker's sessions, which gap evidence ignores (they never write events). */
  private readonly trackerPool: pg.Pool;
  private readonly leases: LeaseSession;
  private readonly tracker: HighWaterTracker;
  /** Housekeeping's own session: its statements never queue behind the tracker's, nor the tracker's behind its. */
  private readonly housekeepingPool: pg.Pool;
  private readonly housekeeping: Housekeeping;
  /** One read of the event table for all the projections of this instance at the same place (issue 15). */
  private readonly reader: SharedReader;
  /** The batch transactions running at once, all projections together (--max-concurrent-batches). */
  private readonly slots: Slots;
  /** The batch contexts of its projectors, read once per wake-up (BatchContexts). */
  private readonly contexts: BatchContexts;
  /** The waits pending in any process, as the tracker's passes read them (src/wait/; projector/waited.ts). */
  private readonly waited = new WaitedPosition();
  private readonly listener: NotificationListener;
  /** The projections this instance runs (owned-projections.ts). */
  private readonly owned: OwnedProjections;
  /** Which projections to run: balancing, replays, operator commands (ownership-loop.ts). */
  private readonly ownership: OwnershipLoop;
  private readonly controller = new AbortController();
  private loops: Promise<void>[] = [];
  private started = false;
  private stopping: Promise<void> | undefined;
  private readonly settings: RunnerSettings;

  constructor(private readonly options: RunnerOptions) {
    this.settings = resolveRunnerSettings(options);
    // The same checks as the CLI's loader: a library user's projections too (names become schemas of versions).
    checkUniqueNames(
      options.projections.map((p) => ({
        projection: validateProjection(p, `RunnerOptions.projections "${p.name}"`),
        source: 'RunnerOptions.projections',
      })),
    );
    this.names = storeNames(this.settings);
    // Every projection loop (a live and a building version each) and every retried operation listens to the stop
    // signal: Node's default of 10 printed a "possible memory leak" warning from 6 projections on.
    setMaxListeners(4 * options.projections.length + 16, this.controller.signal);
    // The presence lease among instances with the same projection code: names and versions of the loaded modules.
    const code = options.projections.map((p) => `${p.name}@${moduleVersion(p)}`).sort();
    const release = `release:${createHash('sha256').update(code.join(',')).digest('hex').slice(0, 16)}` as const;
    this.metrics = options.metrics ?? new RunnerMetrics();
    // Asynchronous commit on every runner session: what the runner writes is either derived from the events table
    // (H, gaps: found again after a crash) or committed atomically with a checkpoint (read models, replay progress),
    // so a crash that loses the last few commits loses them together and they are applied again. It takes an fsync
    // off every batch and every high-water pass (see README, Performance).
    // Two connections per build run (its batch and its read-ahead; a projection may run its live and a new version),
    // plus the ownership loop's.
    this.pool = createPool(options.connectionString, 'runner', options.projections.length * 4 + 2, { asyncCommit: true });
    this.trackerPool = createPool(options.connectionString, 'tracker', 2, { asyncCommit: true });
    this.leases = new LeaseSession(options.connectionString, this.names, options.log);
    this.reader = new SharedReader({
      pool: this.pool,
      names: this.names,
      batchBytes: this.settings.batchBytes,
      onRead: () => this.metrics.eventReads.inc(),
    });
    this.contexts = new BatchContexts({ pool: this.pool, names: this.names, maxAgeMs: this.settings.pollIntervalMs });
    this.slots = new Slots(this.settings.maxConcurrentBatches, (waiting) => this.metrics.batchesWaiting.set(waiting));
    this.tracker = new HighWaterTracker({
      pool: this.trackerPool,
      names: this.names,
      settings: { gapTimeoutMs: this.settings.gapTimeoutMs, fenceDelayMs: this.settings.fenceDelayMs },
      pollIntervalMs: this.settings.pollIntervalMs,
      followIntervalMs: this.settings.followIntervalMs,
      followAbove: this.settings.followAbove,
      leases: this.leases,
      log: options.log.child({ component: 'high-water' }),
      metrics: this.metrics,
      onAdvance: (highWater, onlyHighWater) => this.wakeProjectors(onlyHighWater ? highWater : undefined),
      // A higher position waited for: a move a projector left in memory may be what it waits for (written when woken).
      onWaited: (waited) => {
        if (this.waited.learn(waited)) this.owned.wakeAll();
      },
    });
    this.housekeepingPool = createPool(options.connectionString, 'housekeeping', 1, {
      asyncCommit: true,
      statementTimeoutMs: options.housekeepingStatementTimeoutMs ?? 10_000,
    });
    this.housekeeping = new Housekeeping({
      pool: this.housekeepingPool,
      names: this.names,
      owner: this.leases.owner,
      isLeader: () => this.tracker.leader,
      log: options.log.child({ component: 'housekeeping' }),
      metrics: this.metrics,
      gapHistoryMs: this.settings.gapHistoryMs,
      intervalMs: options.maintenanceIntervalMs ?? 60_000,
      onLate: () => this.wakeProjectors(),
    });
    this.listener = new NotificationListener({
      connectionString: options.connectionString,
      channels: [this.names.channel, this.names.highWaterChannel, this.names.replayChannel, this.names.waitChannel],
      log: options.log.child({ component: 'listener' }),
      onNotification: (channel) => {
        this.metrics.notifications.inc();
        // A waiter's NOTIFY too: the tracker's pass reads the pending waits.
        if (channel === this.names.channel || channel === this.names.waitChannel) this.tracker.notify();
        // The leader wakes its own projectors directly; its NOTIFY is for the other instances.
        else if (channel === this.names.highWaterChannel) {
          if (!this.tracker.leader) this.wakeProjectors();
        } else this.ownership.wake.notify();
      },
      onConnected: () => {
        this.tracker.notify();
        this.wakeProjectors();
        this.ownership.wake.notify();
      },
    });
    this.owned = new OwnedProjections({
      pool: this.pool,
      names: this.names,
      settings: this.settings,
      leases: this.leases,
      log: options.log,
      metrics: this.metrics,
      reader: this.reader,
      contexts: this.contexts,
      slots: this.slots,
      waited: this.waited,
      signal: this.controller.signal,
    });
    this.ownership = new OwnershipLoop({
      pool: this.pool,
      names: this.names,
      leases: this.leases,
      release,
      owned: this.owned,
      units: () => this.units(),
      pollIntervalMs: this.settings.pollIntervalMs,
      log: options.log,
      metrics: this.metrics,
    });
    this.leases.onLost(() => this.owned.dropAll('lease session lost'));
  }

  /**
   * Where the tracker stands: the head, the high-water mark H, its completed passes, and while this instance leads,
   * whether it follows the head or sleeps (high-water/wake.ts) (status lines, tests).
   */
  get positions(): { head: bigint; highWater: bigint; trackerPasses: number; wakeMode: WakeMode | undefined } {
    const { tracker } = this;
    return { head: tracker.head, highWater: tracker.highWater, trackerPasses: tracker.passes, wakeMode: tracker.wakeMode };
  }

  /** This instance's name in leases and checkpoint rows (host/pid). */
  get owner(): string {
    return this.leases.owner;
  }

  loopPasses(): Array<{ what: string; at: number }> {
    return [
      { what: 'the high-water loop', at: this.tracker.lastPassAt },
      { what: 'the ownership loop', at: this.ownership.lastPassAt },
      // A failed projection is idle on purpose, waiting for an operator: not a wedged loop.
      ...this.ownedProjections()
        .filter((p) => p.state !== 'failed')
        .map((p) => ({ what: `projection ${p.name}`, at: p.lastPassAt })),
    ];
  }

  failedProjections(): string[] {
    return this.ownedProjections()
      .filter((p) => p.state === 'failed')
      .map((p) => p.name);
  }

  async pingDatabase(): Promise<void> {
    await this.pool.query('SELECT 1');
  }

  get projections(): Projection[] {
    return this.options.projections;
  }

  ownedProjections(): Projector[] {
    return this.owned.projectors();
  }

  /** `highWater`: this instance's tracker moved H there and changed nothing else (BatchContexts.advance). */
  private wakeProjectors(highWater?: bigint): void {
    this.metrics.wakeUps.inc();
    // Before the projectors wake: the context each of them gets now must be one that sees the new H.
    this.contexts.advance(highWater);
    this.owned.wakeAll();
  }

  async start(): Promise<void> {
    if (this.started) return;
    this.started = true;
    const { log } = this.options;
    const signal = this.controller.signal;
    // No per-projection series yet: an instance exports a projection's series only while it owns it (see
    // RunnerMetrics.forgetProjection), so that two instances never report the same projection.
    this.metrics.attachLagSource(this);
    await withRetries(
      async () => {
        await prepareStore(this.pool, this.names);
        await this.syncBuilds();
        for (const unit of await this.units()) {
          const slot = this.owned.newSlot(unit);
          await this.owned.setup(slot);
          // Its checkpoint row exists once start() returns, whichever instance runs it: a ProjectionWaiter knows it.
          await createCheckpointRow(this.pool, this.names, slot.projection.name, slot.projection.eventTypes, { running: false });
        }
      },
      {
        operation: 'start',
        signal,
        failed: 'database not reachable at start',
        log,
        errors: this.metrics.dbErrors,
      },
    );
    if (this.settings.gapEvidence !== 'off') {
      this.tracker.useEvidence(await createGapEvidence(this.trackerPool, this.names, log.child({ component: 'gap-evidence' })));
    }
    // stop() during start-up (a Ctrl-C while the database was awaited) has closed everything: open nothing more.
    if (signal.aborted) return;
    await this.listener.start();
    this.loops = [this.tracker.run(signal), this.housekeeping.run(signal), this.ownership.run(signal), this.pollLoop(signal)];
    log.info({ projections: this.options.projections.map((p) => p.name), owner: this.leases.owner, ...this.settings }, 'runner started');
  }

  /**
   * The builds the loaded modules need (a first build in place, a new version beside the live one), created at start;
   * says what it did and when this code is older than a version already built (it builds nothing then).
   */
  private async syncBuilds(): Promise<void> {
    const { log } = this.options;
    const outcome = await syncBuilds(this.pool, this.names, this.options.projections, this.settings.switchMode);
    for (const build of outcome.created.filter((b) => b.role === 'building')) {
      log.info(
        { projection: build.projection, version: build.version, schema: build.schema, switch: build.switchMode },
        'a new version: building it from position 0 beside the live one',
      );
    }
    for (const slot of outcome.superseded)
      log.warn({ slot }, 'a version still being built was superseded by a newer one: kept, no longer built');
    for (const { projection, newest } of outcome.older) {
      log.warn({ projection, newest }, 'this code is older than a version already built: it builds nothing (drop that version to go back)');
    }
  }

  /** What this instance may run now: the live and building builds of the loaded code (buildsToRun). */
  private async units(): Promise<BuildUnit[]> {
    return buildsToRun(this.options.projections, await readBuilds(this.pool, this.names));
  }

  /** The fallback for writers that send no NOTIFY and for a listener that is down. */
  private async pollLoop(signal: AbortSignal): Promise<void> {
    const tick = new WakeSignal();
    while ((await tick.wait(this.settings.pollIntervalMs, signal)) !== 'aborted') {
      this.metrics.polls.inc();
      this.tracker.notify();
    }
  }

  /** Graceful: no new batch, the current one finishes and commits, connections close. */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      this.controller.abort();
      await Promise.allSettled([...this.loops, ...this.owned.loops()]);
      await this.owned.giveUpAll();
      await this.listener.stop();
      await this.leases.close();
      await this.pool.end().catch(() => {});
      await this.trackerPool.end().catch(() => {});
      await this.housekeepingPool.end().catch(() => {});
      this.options.log.info('runner stopped');
    })();
    return this.stopping;
  }

  /** Scrape-time lag: head from the tracker, the oldest unapplied event's age per owned projection. */
  async lagSnapshot() {
    const owned = this.ownedProjections();
    const ages = await oldestUnappliedAges(this.pool, this.names, owned);
    const age = (name: string) => Math.max(0, ages.get(name) ?? 0);
    // Only what is still owned once the query is back: a projection given up meanwhile must not get its lag back.
    const stillOwned = owned.filter((p) => this.owned.stillOwns(p));
    return {
      head: this.tracker.head,
      projections: stillOwned.map((p) => ({ name: p.name, checkpoint: p.checkpoint, oldestUnappliedAgeSeconds: age(p.name) })),
    };
  }
}
