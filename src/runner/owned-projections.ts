import type pg from 'pg';
import type { Logger } from 'pino';
import type { RunnerSettings } from '../config.js';
import type { StoreNames } from '../db/identifiers.js';
import { withSessionLock } from '../db/session-lock.js';
import type { RunnerMetrics } from '../metrics/registry.js';
import type { LeaseSession } from '../ownership/leases.js';
import type { BatchContexts } from '../projector/batch-contexts.js';
import type { WaitedPosition } from '../projector/waited.js';
import { setProjectionState } from '../projector/checkpoints.js';
import { Projector } from '../projector/projector.js';
import { Replay, type ReplayRequest } from '../replay/replay.js';
import type { Slots } from '../shared/slots.js';
import type { SharedReader } from '../sources/shared-reader.js';
import { BuildSlot } from '../versions/build-slot.js';
import type { BuildUnit } from '../versions/builds.js';

export interface OwnedProjectionsOptions {
  pool: pg.Pool;
  names: StoreNames;
  settings: RunnerSettings;
  leases: LeaseSession;
  log: Logger;
  metrics: RunnerMetrics;
  reader: SharedReader;
  contexts: BatchContexts;
  slots: Slots;
  /** The waits pending in any process, as the tracker's passes read them (projector/waited.ts). */
  waited: WaitedPosition;
  /** The runner's stop signal: a setup waiting for its session lock gives up with it. */
  signal: AbortSignal;
}

export interface OwnedProjection {
  projector: Projector;
  slot: BuildSlot;
  replay: Replay;
  controller: AbortController;
  done: Promise<void>;
}

/**
 * The projections this instance runs, keyed by build slot: the one owner of that map. Loads a projection (setup, its
 * checkpoint, a replay to resume), launches its loop, and gives it up (gracefully, or at once when the lease session
 * is lost). Which ones to take or give up is the ownership loop's decision (ownership-loop.ts).
 */
export class OwnedProjections {
  private readonly owned = new Map<string, OwnedProjection>();
  /** Projectors dropped with a lost lease session, until their last batch is over. */
  private readonly draining = new Map<string, Promise<void>>();
  /** Slots whose setup ran in this process (setup is idempotent, but it runs once per build and process). */
  private readonly setUp = new Set<string>();

  constructor(private readonly options: OwnedProjectionsOptions) {}

  get size(): number {
    return this.owned.size;
  }

  /** The owned build slots, in the order they were taken. */
  slotNames(): string[] {
    return [...this.owned.keys()];
  }

  get(slot: string): OwnedProjection | undefined {
    return this.owned.get(slot);
  }

  projectors(): Projector[] {
    return [...this.owned.values()].map((o) => o.projector);
  }

  /** Still the projector this instance runs for its projection (not given up or restarted meanwhile). */
  stillOwns(projector: Projector): boolean {
    return this.owned.get(projector.name)?.projector === projector;
  }

  wakeAll(): void {
    for (const { projector } of this.owned.values()) projector.wake.notify();
  }

  /**
   * A build's setup, once per process, on a connection of its own (scopedProjection puts it in the build's schema),
   * one instance at a time: instances starting together would otherwise race on the setup's CREATE … IF NOT EXISTS.
   */
  async setup(slot: BuildSlot): Promise<void> {
    const { projection } = slot;
    if (this.setUp.has(projection.name)) return;
    const { schema, table } = this.options.names;
    await withSessionLock(
      this.options.pool,
      `${schema}.${table}:setup:${projection.name}`,
      (client) => slot.setUp(client),
      this.options.signal,
    );
    this.setUp.add(projection.name);
  }

  newSlot(unit: BuildUnit): BuildSlot {
    const { pool, names, log } = this.options;
    return new BuildSlot({ pool, names, log, ...unit });
  }

  async start(unit: BuildUnit, parent: AbortSignal, request?: ReplayRequest): Promise<Projector> {
    return (await this.load(unit, parent, request))();
  }

  /**
   * Everything a projection needs before its loop runs (setup, its checkpoint, a replay to resume), and the function
   * that launches the loop: its first steps (the state, its place in the shared reader) run at once when called.
   */
  async load(unit: BuildUnit, parent: AbortSignal, request?: ReplayRequest): Promise<() => Promise<Projector>> {
    const { pool, names, leases, settings, log } = this.options;
    const slot = this.newSlot(unit);
    const { projection } = slot;
    await this.setup(slot);
    const replay = new Replay({ pool, names, projection: projection.name, log });
    const projector = new Projector({
      projection,
      pool,
      names,
      owner: leases.owner,
      batchSize: settings.batchSize,
      handlerRetries: settings.handlerRetries,
      onError: settings.onError,
      pollIntervalMs: settings.pollIntervalMs,
      batchBytes: settings.batchBytes,
      log,
      metrics: this.options.metrics,
      replay,
      reader: this.options.reader,
      build: slot,
      slots: this.options.slots,
      contexts: this.options.contexts,
      waited: this.options.waited,
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
    const { metrics, leases } = this.options;
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
        metrics.forgetProjection(projection.name);
        await leases.release('projection', projection.name).catch(() => {});
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

  /** Gives the projection up gracefully: its batch finishes, its row is left without an owner, its lease goes. */
  async release(name: string): Promise<void> {
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
    await this.options.leases.release('projection', name).catch(() => {});
  }

  /** Stops the projection's loop and forgets it, keeping its lease and its row (a replay restarts it at once). */
  async halt(name: string): Promise<OwnedProjection | undefined> {
    const entry = this.owned.get(name);
    if (!entry) return undefined;
    entry.controller.abort();
    await entry.done;
    this.owned.delete(name);
    return entry;
  }

  /** The lease session is lost: every projection stops at once (another instance may take them any moment). */
  dropAll(reason: string): void {
    for (const [name, entry] of this.owned) {
      this.options.log.warn({ projection: name, reason }, 'stopping projection');
      entry.controller.abort();
      entry.projector.setState('stopped');
      // Series removed once its last batch is over (it may still set them); a restart here awaits this first.
      this.draining.set(
        name,
        entry.done.catch(() => {}).then(() => this.options.metrics.forgetProjection(name)),
      );
    }
    this.owned.clear();
  }

  /** The loops of the owned projections, for stop() to await (the stop signal has already reached them). */
  loops(): Promise<void>[] {
    return [...this.owned.values()].map((o) => o.done);
  }

  /** At stop, once their loops are over: every row is left without an owner. */
  async giveUpAll(): Promise<void> {
    for (const [name, entry] of this.owned) await this.giveUpRow(name, entry.projector.state === 'failed');
    this.owned.clear();
  }

  /**
   * This instance no longer runs the projection: its metric series go, and its row is left without an owner —
   * `stopped`, or still `failed` (status shows it, `skip` and `retry` find it).
   */
  private async giveUpRow(name: string, failed: boolean): Promise<void> {
    this.options.metrics.forgetProjection(name);
    await setProjectionState(this.options.pool, this.options.names, name, failed ? 'failed' : 'stopped', null).catch(() => {});
  }
}
