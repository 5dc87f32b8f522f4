import type pg from 'pg';
import type { Logger } from 'pino';
import type { StoreNames } from '../db/identifiers.js';
import { withTransaction } from '../db/connection.js';
import { isRetryableDatabaseError } from '../db/retry.js';
import type { RunnerMetrics } from '../metrics/registry.js';
import { claimOrder, excess, fairShare } from '../ownership/balancing.js';
import type { LeaseSession } from '../ownership/leases.js';
import { claimCommands, finishCommand } from '../projector/commands.js';
import type { Projector } from '../projector/projector.js';
import { claimReplays, recordReplayProgress, resetForReplay } from '../replay/requests.js';
import { WakeSignal } from '../shared/wake-signal.js';
import type { BuildSlot } from '../versions/build-slot.js';
import type { BuildUnit } from '../versions/builds.js';
import type { OwnedProjections } from './owned-projections.js';

export interface OwnershipLoopOptions {
  pool: pg.Pool;
  names: StoreNames;
  leases: LeaseSession;
  /** The presence lease among instances with the same projection code (the share is counted among them). */
  release: `release:${string}`;
  owned: OwnedProjections;
  /** What this instance may run now: the live and building builds of the loaded code. */
  units: () => Promise<BuildUnit[]>;
  pollIntervalMs: number;
  log: Logger;
  metrics: RunnerMetrics;
}

/**
 * Takes and gives up projections so that each instance owns about ceil(P/N) (advisory-lock leases), and serves the
 * replay requests and operator commands (retry, skip) of the projections it owns. One pass per poll interval, or at
 * once when `wake` is notified (a replay request's NOTIFY, a reconnection).
 */
export class OwnershipLoop {
  readonly wake = new WakeSignal();
  lastPassAt = Date.now();

  constructor(private readonly options: OwnershipLoopOptions) {}

  async run(signal: AbortSignal): Promise<void> {
    const { log } = this.options;
    while (!signal.aborted) {
      try {
        await this.balance(signal);
        await this.serveReplays(signal);
        await this.serveCommands(signal);
      } catch (error) {
        if (signal.aborted) break;
        this.options.metrics.dbErrors.inc({ operation: 'ownership' });
        log.warn({ err: error }, 'ownership pass failed; retrying after a poll interval');
      }
      this.lastPassAt = Date.now();
      await this.wake.wait(this.options.pollIntervalMs, signal);
    }
  }

  private async balance(signal: AbortSignal): Promise<void> {
    const { leases, owned, log } = this.options;
    await leases.verify();
    await leases.tryAcquire('instance', leases.owner);
    // The share is counted among the instances that loaded the same code (this release): during a blue/green
    // overlap each release can run only its own versions, and counting the other release's instances too left the
    // live version of one of them unrun.
    await leases.tryAcquire(this.options.release, leases.owner);
    const instances = Math.max(1, await leases.liveInstances(this.options.release));
    const all = await this.options.units();
    // A build switched away from (kept) or dropped is no longer this instance's to run.
    for (const slot of owned.slotNames().filter((slot) => !all.some((u) => u.build.slot === slot))) {
      log.info({ projection: slot }, 'this version is no longer live or building: giving it up');
      const replay = owned.get(slot)?.replay;
      await owned.release(slot);
      // A replay it was serving has nobody to finish it now: it ends failed, so that `replay` stops following it.
      await replay?.fail(`"${slot}" was switched away from or dropped during the replay`).catch(() => {});
    }
    const share = fairShare(all.length, instances);
    // Give back the excess first, gracefully (the projector finishes its batch), so a new instance gets its share.
    for (let n = excess(owned.size, share); n > 0; n--) {
      const [name] = owned.slotNames().slice(-1);
      log.info({ projection: name }, `giving up ownership to balance ${all.length} projections over ${instances} instances`);
      await owned.release(name!);
    }
    // Those claimed in one pass start together (loaded first, then launched in one go): projections catching up
    // from the same place then read their first pages together and share them from there. Started one after the
    // other, the first was tens of milliseconds ahead, the pages behind it were gone, and the others read on their
    // own at its pace, never catching up (4 no-op projections catching up 200,000 events: 1.6 s or 5 s, by luck).
    const launches: Array<{ slot: string; launch: () => Promise<Projector> }> = [];
    try {
      for (const unit of claimOrder(all, leases.owner)) {
        if (owned.size + launches.length >= share || signal.aborted) break;
        if (owned.get(unit.build.slot)) continue;
        if (await leases.tryAcquire('projection', unit.build.slot)) {
          launches.push({ slot: unit.build.slot, launch: await owned.load(unit, signal) });
        }
      }
    } finally {
      // Those loaded run even when loading the next one failed (the pass is retried for the rest), but only while
      // their lease is still held: a lease session lost during the pass dropped the owned projections only, and one
      // launched without its lease would run beside the instance that takes it.
      await Promise.all(launches.filter((l) => leases.holds('projection', l.slot)).map((l) => l.launch()));
    }
  }

  private async serveReplays(signal: AbortSignal): Promise<void> {
    const { pool, names, owned, leases, log } = this.options;
    const claimed = await claimReplays(pool, names, owned.slotNames());
    for (const request of claimed) {
      // Not served now (stopping, or the projection was just lost): the row stays `running` without a target, and
      // whoever owns the projection next claims it again (claimReplays).
      if (!owned.get(request.projection) || signal.aborted) continue;
      log.info({ projection: request.projection, replay: request.id.toString() }, 'replay: resetting the read model');
      const { slot } = (await owned.halt(request.projection))!;
      const projection = slot.projection;
      // A database fault throws out of the pass with the lease still held: the next pass starts the projection
      // again and claims this row again (no target yet), so the reset is redone.
      const target = await this.resetForReplay(slot, request.id);
      // The lease session died meanwhile: another instance may own the projection now, and it finishes the replay.
      if (!leases.holds('projection', projection.name)) continue;
      const projector = await owned.start(
        { build: slot.build, module: slot.module },
        signal,
        target === undefined ? undefined : { id: request.id, target },
      );
      if (target !== undefined) {
        log.info({ projection: projection.name, target: target.toString() }, 'replay: rebuilding from position 0');
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
    const { pool, names, log } = this.options;
    const { projection } = slot;
    // The reset runs in the build's scope, as a batch does: a version switched away from meanwhile is refused
    // (BuildRetiredError) before its reset could reach the live version through the names.
    const reset = async (tx: pg.ClientBase) => {
      await slot.enter(tx);
      await projection.reset?.(tx);
    };
    try {
      return await withTransaction(pool, (tx) => resetForReplay(tx, names, projection.name, replayId, () => reset(tx)));
    } catch (error) {
      if (isRetryableDatabaseError(error)) throw error;
      const message = error instanceof Error ? error.message : String(error);
      log.error({ projection: projection.name, err: error }, 'replay failed: the projection could not reset its read model');
      await recordReplayProgress(pool, names, replayId, 0, false, `reset failed: ${message}`);
      return undefined;
    }
  }

  /**
   * Operator commands (retry, skip) for the projections this instance owns: each goes to its projector, which
   * carries it out between two batches. Not awaited: a retry runs a batch with handler retries and backoff, and
   * this loop must keep balancing and serving replays meanwhile. The outcome lands in the command's row.
   */
  private async serveCommands(signal: AbortSignal): Promise<void> {
    const { pool, names, owned, log } = this.options;
    const claimed = await claimCommands(pool, names, owned.slotNames());
    for (const command of claimed) {
      const entry = owned.get(command.projection);
      const outcome =
        entry && !signal.aborted
          ? entry.projector.submit(command)
          : Promise.reject(new Error(`this instance gave "${command.projection}" up before serving the command: run it again`));
      void outcome
        .then(
          (result) => finishCommand(pool, names, command.id, { result }),
          (error: unknown) => finishCommand(pool, names, command.id, { error: error instanceof Error ? error.message : String(error) }),
        )
        .catch((error: unknown) => log.warn({ err: error, command: command.id.toString() }, 'could not record the outcome of a command'));
      log.info({ projection: command.projection, command: command.command, id: command.id.toString() }, 'serving a command');
    }
  }
}
