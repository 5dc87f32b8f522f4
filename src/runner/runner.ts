import { createHash } from 'node:crypto';
import { setMaxListeners } from 'node:events';
import type pg from 'pg';
import type { Logger } from 'pino';
import { resolveRunnerSettings, type RunnerSettings } from '../config.js';
import { createPool, withTransaction } from '../db/connection.js';
import { storeNames, type StoreNames } from '../db/identifiers.js';
import { RunnerMetrics, type LagSource } from '../metrics/registry.js';
import type { HealthSource } from '../metrics/server.js';
import { createCheckpointRow, setProjectionState } from '../projector/checkpoints.js';
import { oldestUnappliedAges } from '../sources/native.js';
import { BatchContexts } from '../projector/batch-contexts.js';
import { SharedReader } from '../sources/shared-reader.js';
import { createGapEvidence } from '../high-water/evidence.js';
import { HighWaterTracker } from '../high-water/tracker.js';
import { Housekeeping } from '../high-water/housekeeping.js';
import { claimOrder, excess, fairShare } from '../ownership/balancing.js';
import { LeaseSession } from '../ownership/leases.js';
import { claimCommands, finishCommand } from '../projector/commands.js';
import { checkUniqueNames, validateProjection, type Projection } from '../projection/projection.js';
import { Projector } from '../projector/projector.js';
import { Replay, type ReplayRequest } from '../replay/replay.js';
import { claimReplays, recordReplayProgress, resetForReplay } from '../replay/requests.js';
import { isRetryableDatabaseError, withRetries } from '../db/retry.js';
import { Slots } from '../shared/slots.js';
import { WakeSignal } from '../shared/wake-signal.js';
import { NotificationListener } from './listener.js';
import type { WakeMode } from '../high-water/wake.js';
import { withSessionLock } from '../db/session-lock.js';
import { prepareStore } from '../sources/prepare.js';
import { buildsToRun, moduleVersion, type BuildUnit } from '../versions/builds.js';
import { readBuilds, syncBuilds } from '../versions/builds-sql.js';
import { BuildSlot } from '../versions/build-slot.js';

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

interface OwnedProjection {
  projector: Projector;
  slot: BuildSlot;
  replay: Replay;
  controller: AbortController;
  done: Promise<void>;
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
  private readonly listener: NotificationListener;
  private readonly owned = new Map<string, OwnedProjection>();
  private readonly draining = new Map<string, Promise<void>>();
  private readonly ownershipWake = new WakeSignal();
  private readonly controller = new AbortController();
  private loops: Promise<void>[] = [];
  private started = false;
  private stopping: Promise<void> | undefined;
  private readonly settings: RunnerSettings;
  private lastOwnershipPassAt = Date.now();
  /** The presence lease among instances with the same projection code: names and versions of the loaded modules. */
  private readonly release: `release:${string}`;
  /** Slots whose setup ran in this process (setup is idempotent, but it runs once per build and process). */
  private readonly setUp = new Set<string>();

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
    const code = options.projections.map((p) => `${p.name}@${moduleVersion(p)}`).sort();
    this.release = `release:${createHash('sha256').update(code.join(',')).digest('hex').slice(0, 16)}`;
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
      leases: this.leases,
      log: options.log.child({ component: 'high-water' }),
      metrics: this.metrics,
      onAdvance: (highWater, onlyHighWater) => this.wakeProjectors(onlyHighWater ? highWater : undefined),
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
      channels: [this.names.channel, this.names.highWaterChannel, this.names.replayChannel],
      log: options.log.child({ component: 'listener' }),
      onNotification: (channel) => {
        this.metrics.notifications.inc();
        if (channel === this.names.channel) this.tracker.notify();
        // The leader wakes its own projectors directly; its NOTIFY is for the other instances.
        else if (channel === this.names.highWaterChannel) {
          if (!this.tracker.leader) this.wakeProjectors();
        } else this.ownershipWake.notify();
      },
      onConnected: () => {
        this.tracker.notify();
        this.wakeProjectors();
        this.ownershipWake.notify();
      },
    });
    this.leases.onLost(() => this.dropAllProjections('lease session lost'));
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
      { what: 'the ownership loop', at: this.lastOwnershipPassAt },
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
    return [...this.owned.values()].map((o) => o.projector);
  }

  /** `highWater`: this instance's tracker moved H there and changed nothing else (BatchContexts.advance). */
  private wakeProjectors(highWater?: bigint): void {
    this.metrics.wakeUps.inc();
    // Before the projectors wake: the context each of them gets now must be one that sees the new H.
    this.contexts.advance(highWater);
    for (const { projector } of this.owned.values()) projector.wake.notify();
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
          const slot = new BuildSlot({ ...this.slotOptions(), ...unit });
          await this.setup(slot);
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
    this.loops = [this.tracker.run(signal), this.housekeeping.run(signal), this.ownershipLoop(signal), this.pollLoop(signal)];
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

  private slotOptions() {
    return { pool: this.pool, names: this.names, log: this.options.log };
  }

  /**
   * A build's setup, once per process, on a connection of its own (scopedProjection puts it in the build's schema),
   * one instance at a time: instances starting together would otherwise race on the setup's CREATE … IF NOT EXISTS.
   */
  private async setup(slot: BuildSlot): Promise<void> {
    const { projection } = slot;
    if (this.setUp.has(projection.name)) return;
    const { schema, table } = this.names;
    const signal = this.controller.signal;
    await withSessionLock(this.pool, `${schema}.${table}:setup:${projection.name}`, (client) => slot.setUp(client), signal);
    this.setUp.add(projection.name);
  }

  /** The fallback for writers that send no NOTIFY and for a listener that is down. */
  private async pollLoop(signal: AbortSignal): Promise<void> {
    const tick = new WakeSignal();
    while ((await tick.wait(this.settings.pollIntervalMs, signal)) !== 'aborted') {
      this.metrics.polls.inc();
      this.tracker.notify();
    }
  }

  /**
   * Takes and gives up projections so that each instance owns about ceil(P/N), and serves replay requests for the
   * projections it owns.
   */
  private async ownershipLoop(signal: AbortSignal): Promise<void> {
    const { log } = this.options;
    while (!signal.aborted) {
      try {
        await this.balance(signal);
        await this.serveReplays(signal);
        await this.serveCommands(signal);
      } catch (error) {
        if (signal.aborted) break;
        this.metrics.dbErrors.inc({ operation: 'ownership' });
        log.warn({ err: error }, 'ownership pass failed; retrying after a poll interval');
      }
      this.lastOwnershipPassAt = Date.now();
      await this.ownershipWake.wait(this.settings.pollIntervalMs, signal);
    }
  }

  private async balance(signal: AbortSignal): Promise<void> {
    const { leases } = this;
    await leases.verify();
    await leases.tryAcquire('instance', leases.owner);
    // The share is counted among the instances that loaded the same code (this release): during a blue/green
    // overlap each release can run only its own versions, and counting the other release's instances too left the
    // live version of one of them unrun.
    await leases.tryAcquire(this.release, leases.owner);
    const instances = Math.max(1, await leases.liveInstances(this.release));
    const all = await this.units();
    // A build switched away from (kept) or dropped is no longer this instance's to run.
    for (const slot of [...this.owned.keys()].filter((slot) => !all.some((u) => u.build.slot === slot))) {
      this.options.log.info({ projection: slot }, 'this version is no longer live or building: giving it up');
      const replay = this.owned.get(slot)?.replay;
      await this.releaseProjection(slot);
      // A replay it was serving has nobody to finish it now: it ends failed, so that `replay` stops following it.
      await replay?.fail(`"${slot}" was switched away from or dropped during the replay`).catch(() => {});
    }
    const share = fairShare(all.length, instances);
    // Give back the excess first, gracefully (the projector finishes its batch), so a new instance gets its share.
    for (let n = excess(this.owned.size, share); n > 0; n--) {
      const [name] = [...this.owned.keys()].slice(-1);
      this.options.log.info({ projection: name }, `giving up ownership to balance ${all.length} projections over ${instances} instances`);
      await this.releaseProjection(name!);
    }
    // Those claimed in one pass start together (loaded first, then launched in one go): projections catching up
    // from the same place then read their first pages together and share them from there. Started one after the
    // other, the first was tens of milliseconds ahead, the pages behind it were gone, and the others read on their
    // own at its pace, never catching up (4 no-op projections catching up 200,000 events: 1.6 s or 5 s, by luck).
    const launches: Array<{ slot: string; launch: () => Promise<Projector> }> = [];
    try {
      for (const unit of claimOrder(all, leases.owner)) {
        if (this.owned.size + launches.length >= share || signal.aborted) break;
        if (this.owned.has(unit.build.slot)) continue;
        if (await leases.tryAcquire('projection', unit.build.slot)) {
          launches.push({ slot: unit.build.slot, launch: await this.loadProjection(unit, signal) });
        }
      }
    } finally {
      // Those loaded run even when loading the next one failed (the pass is retried for the rest), but only while
      // their lease is still held: a lease session lost during the pass dropped the owned projections only, and one
      // launched without its lease would run beside the instance that takes it.
      await Promise.all(launches.filter((l) => leases.holds('projection', l.slot)).map((l) => l.launch()));
    }
  }

  private async startProjection(unit: BuildUnit, parent: AbortSignal, request?: ReplayRequest): Promise<Projector> {
    return (await this.loadProjection(unit, parent, request))();
  }

  /**
   * Everything a projection needs before its loop runs (setup, its checkpoint, a replay to resume), and the function
   * that launches the loop: its first steps (the state, its place in the shared reader) run at once when called.
   */
  private async loadProjection(unit: BuildUnit, parent: AbortSignal, request?: ReplayRequest): Promise<() => Promise<Projector>> {
    const slot = new BuildSlot({ ...this.slotOptions(), ...unit });
    const { projection } = slot;
    await this.setup(slot);
    const replay = new Replay({ pool: this.pool, names: this.names, projection: projection.name, log: this.options.log });
    const projector = new Projector({
      projection,
      pool: this.pool,
      names: this.names,
      owner: this.leases.owner,
      batchSize: this.settings.batchSize,
      handlerRetries: this.settings.handlerRetries,
      onError: this.settings.onError,
      pollIntervalMs: this.settings.pollIntervalMs,
      batchBytes: this.settings.batchBytes,
      log: this.options.log,
      metrics: this.metrics,
      replay,
      reader: this.reader,
      build: slot,
      slots: this.slots,
      contexts: this.contexts,
    });
    // A projector dropped with a lost lease session may still be finishing its batch: never run two at once.
    await this.draining.get(projection.name);
    await projector.load();
    // A replay to serve: the one just requested, or the one a previous owner was running when it died.
    if (request) replay.serve(request);
    else await replay.resumeRunning();
    return () => this.launch(projector, slot, replay, parent);
  }

  private async launch(projector: Projector, slot: BuildSlot, replay: Replay, parent: AbortSignal): Promise<Projector> {
    const { projection } = slot;
    const controller = new AbortController();
    // Stopped while it was being loaded: it stops at once too.
    if (parent.aborted) controller.abort();
    const onParentAbort = () => controller.abort();
    parent.addEventListener('abort', onParentAbort, { once: true });
    const entry: OwnedProjection = { projector, slot, replay, controller, done: Promise.resolve() };
    entry.done = projector.run(controller.signal).finally(async () => {
      parent.removeEventListener('abort', onParentAbort);
      // Stopped by itself (ownership lost): forget it and give the lease back, so the next balance pass can start
      // over from the checkpoint in the database (here or in another instance).
      // A failed projection stays owned and failed until the next start; only a lost one is given back.
      if (!controller.signal.aborted && projector.state !== 'failed' && this.owned.get(projection.name) === entry) {
        this.owned.delete(projection.name);
        this.metrics.forgetProjection(projection.name);
        await this.leases.release('projection', projection.name).catch(() => {});
      }
      // Failed while rebuilding, or its version switched away from meanwhile: the request ends failed (also when a
      // future path stops the loop without a batch), so that `replay` does not follow it for ever.
      if (projector.state === 'failed' || projector.retired) await replay.fail(projector.retired?.message).catch(() => {});
    });
    this.owned.set(projection.name, entry);
    await replay.finishIfNothingToRebuild(projector.checkpoint); // the empty store
    this.options.log.info({ projection: projection.name, position: projector.checkpoint.toString() }, 'projection started');
    return projector;
  }

  private async releaseProjection(name: string): Promise<void> {
    const entry = this.owned.get(name);
    if (!entry) return;
    entry.controller.abort();
    await entry.done;
    this.owned.delete(name);
    const failed = entry.projector.state === 'failed';
    entry.projector.setState('stopped');
    // Its series go (after the state change above, which sets one) before the lease does, so no scrape ever finds
    // the projection on two instances.
    await this.giveUpRow(name, failed);
    await this.leases.release('projection', name).catch(() => {});
  }

  /**
   * This instance no longer runs the projection: its metric series go, and its row is left without an owner —
   * `stopped`, or still `failed` (status shows it, `skip` and `retry` find it).
   */
  private async giveUpRow(name: string, failed: boolean): Promise<void> {
    this.metrics.forgetProjection(name);
    await setProjectionState(this.pool, this.names, name, failed ? 'failed' : 'stopped', null).catch(() => {});
  }

  private dropAllProjections(reason: string): void {
    for (const [name, entry] of this.owned) {
      this.options.log.warn({ projection: name, reason }, 'stopping projection');
      entry.controller.abort();
      entry.projector.setState('stopped');
      // Series removed once its last batch is over (it may still set them); a restart here awaits this first.
      this.draining.set(
        name,
        entry.done.catch(() => {}).then(() => this.metrics.forgetProjection(name)),
      );
    }
    this.owned.clear();
  }

  private async serveReplays(signal: AbortSignal): Promise<void> {
    const claimed = await claimReplays(this.pool, this.names, [...this.owned.keys()]);
    for (const request of claimed) {
      // Not served now (stopping, or the projection was just lost): the row stays `running` without a target, and
      // whoever owns the projection next claims it again (claimReplays).
      const entry = this.owned.get(request.projection);
      if (!entry || signal.aborted) continue;
      this.options.log.info({ projection: request.projection, replay: request.id.toString() }, 'replay: resetting the read model');
      entry.controller.abort();
      await entry.done;
      this.owned.delete(request.projection);
      const { slot } = entry;
      const projection = slot.projection;
      // A database fault throws out of the pass with the lease still held: the next pass starts the projection
      // again and claims this row again (no target yet), so the reset is redone.
      const target = await this.resetForReplay(slot, request.id);
      // The lease session died meanwhile: another instance may own the projection now, and it finishes the replay.
      if (!this.leases.holds('projection', projection.name)) continue;
      const projector = await this.startProjection(
        { build: slot.build, module: slot.module },
        signal,
        target === undefined ? undefined : { id: request.id, target },
      );
      if (target !== undefined) {
        this.options.log.info({ projection: projection.name, target: target.toString() }, 'replay: rebuilding from position 0');
      }
      projector.wake.notify();
    }
  }

  /**
   * The reset of a replay, in one transaction with the request's target (so a request with a target has been reset).
   * The projection's own `reset` failing ends the request `failed` with its error and returns undefined: nothing was
   * reset, the projection carries on from its checkpoint. A database fault is thrown (retried by the next pass).
   */
  private async resetForReplay(slot: BuildSlot, replayId: bigint): Promise<bigint | undefined> {
    const { projection } = slot;
    // The reset runs in the build's scope, as a batch does: a version switched away from meanwhile is refused
    // (BuildRetiredError) before its reset could reach the live version through the names.
    const reset = async (tx: pg.ClientBase) => {
      await slot.enter(tx);
      await projection.reset?.(tx);
    };
    try {
      return await withTransaction(this.pool, (tx) => resetForReplay(tx, this.names, projection.name, replayId, () => reset(tx)));
    } catch (error) {
      if (isRetryableDatabaseError(error)) throw error;
      const message = error instanceof Error ? error.message : String(error);
      this.options.log.error({ projection: projection.name, err: error }, 'replay failed: the projection could not reset its read model');
      await recordReplayProgress(this.pool, this.names, replayId, 0, false, `reset failed: ${message}`);
      return undefined;
    }
  }

  /**
   * Operator commands (retry, skip) for the projections this instance owns: each goes to its projector, which
   * carries it out between two batches. Not awaited: a retry runs a batch with handler retries and backoff, and
   * this loop must keep balancing and serving replays meanwhile. The outcome lands in the command's row.
   */
  private async serveCommands(signal: AbortSignal): Promise<void> {
    const claimed = await claimCommands(this.pool, this.names, [...this.owned.keys()]);
    for (const command of claimed) {
      const entry = this.owned.get(command.projection);
      const outcome =
        entry && !signal.aborted
          ? entry.projector.submit(command)
          : Promise.reject(new Error(`this instance gave "${command.projection}" up before serving the command: run it again`));
      void outcome
        .then(
          (result) => finishCommand(this.pool, this.names, command.id, { result }),
          (error: unknown) =>
            finishCommand(this.pool, this.names, command.id, { error: error instanceof Error ? error.message : String(error) }),
        )
        .catch((error: unknown) =>
          this.options.log.warn({ err: error, command: command.id.toString() }, 'could not record the outcome of a command'),
        );
      this.options.log.info({ projection: command.projection, command: command.command, id: command.id.toString() }, 'serving a command');
    }
  }

  /** Graceful: no new batch, the current one finishes and commits, connections close. */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      this.controller.abort();
      await Promise.allSettled([...this.loops, ...[...this.owned.values()].map((o) => o.done)]);
      for (const [name, entry] of this.owned) await this.giveUpRow(name, entry.projector.state === 'failed');
      this.owned.clear();
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
    const stillOwned = owned.filter((p) => this.owned.get(p.name)?.projector === p);
    return {
      head: this.tracker.head,
      projections: stillOwned.map((p) => ({ name: p.name, checkpoint: p.checkpoint, oldestUnappliedAgeSeconds: age(p.name) })),
    };
  }
}
