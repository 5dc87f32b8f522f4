import type { Logger } from 'pino';
import type pg from 'pg';
import type { StoreNames } from '../db/identifiers.js';
import { BuildRetiredError, OwnershipLostError } from '../errors.js';
import type { RunnerMetrics } from '../metrics/registry.js';
import type { ErrorPolicy, Projection, ProjectionState } from '../projection/projection.js';
import type { Replay } from '../replay/replay.js';
import type { Slots } from '../shared/slots.js';
import { WakeSignal } from '../shared/wake-signal.js';
import type { SharedReader } from '../sources/shared-reader.js';
import type { BuildSlot } from '../versions/build-slot.js';
import type { BatchContexts } from './batch-contexts.js';
import type { WaitedPosition } from './waited.js';
import { asBuildState, readAgainAtOnce } from './batch.js';
import { ensureCheckpoint, setProjectionState, type FailureRecord } from './checkpoints.js';
import type { CommandRow } from './commands.js';
import { Delivery } from './delivery.js';
import { FailurePath, type Failure } from './failure.js';
import { OperatorCommands, type CommandResult } from './operator-commands.js';
import { BatchPipeline } from './pipeline.js';
import { ProjectorPosition } from './position.js';
import { BatchShell } from './transaction-shell.js';

/**
 * One projection's loop. States (the projection_runner_projection_state metric and the checkpoint row):
 *
 *   stopped ──start──▶ catching_up ◀──full batch──▶ running (caught up with H)
 *                          │  ▲                        │
 *                          │  └──── replay done ───── replaying (reset, rebuilding from 0)
 *                          └──handler keeps failing──▶ failed (until `retry`, `skip` or the next start)
 *
 * A batch is one transaction, in steps (pipeline.ts BatchPipeline.runBatch): read events in (checkpoint, H], deliver them to the handlers,
 * record the positions of given-up gaps it passed without reading (projection_skipped_positions), apply late notices
 * for skipped positions, move the checkpoint by compare-and-set, commit. A crash anywhere in it applies nothing twice
 * and skips nothing, for read models in the same database.
 *
 * The loop composes the parts, each the one owner of its state: where it is (ProjectorPosition), the handlers
 * (Delivery), the batch transaction (BatchShell), the batches (BatchPipeline), the failure path (FailurePath) and
 * the operator commands (OperatorCommands). The parts reach back to the loop only through the small host interfaces
 * they declare (setState, switchIfBuilt, failed, running/state/wake).
 *
 * A replay's state (its target, its request row and progress) belongs to the Replay the runner hands in: the
 * projector only asks it whether a rebuild runs and whether a checkpoint reaches it, and reports committed batches.
 */

export interface ProjectorOptions {
  projection: Projection;
  pool: pg.Pool;
  names: StoreNames;
  owner: string;
  batchSize: number;
  handlerRetries: number;
  /** What to do once the handler retries are spent: stop (failed) or skip (dead letter). */
  onError?: ErrorPolicy;
  pollIntervalMs: number;
  /** Upper bound on the stored bytes of one batch read (readEvents). */
  batchBytes: number;
  log: Logger;
  metrics: RunnerMetrics;
  /** Called once the projection is marked failed (state and error committed). */
  onFailed?: (projector: Projector, failure: FailureRecord) => Promise<void>;
  /** The projection's replay (owned by it): asked whether a rebuild runs, told about every committed batch. */
  replay: Replay;
  /** The instance's shared reader: the pages of events this projection reads, shared with the others at its place. */
  reader: SharedReader;
  /** The build (version) this projector runs: scopes each batch to it, switches it live once built (src/versions/). */
  build?: BuildSlot;
  /** The instance's batch slots (--max-concurrent-batches): each batch transaction holds one; none: unbounded. */
  slots?: Slots;
  /** The instance's batch contexts: read once per wake-up for all its projectors. */
  contexts: BatchContexts;
  /** The waits pending in any process (src/wait/), as the instance's tracker last read them; none: never waited. */
  waited?: WaitedPosition;
}

export class Projector {
  readonly name: string;
  readonly wake = new WakeSignal();
  state: ProjectionState = 'stopped';
  lastPassAt = Date.now();
  /** Why the loop stopped when its build changed under it (switched away from, dropped, moved). */
  retired: BuildRetiredError | undefined;
  /** Whether the loop runs (commands are refused otherwise). */
  running = false;
  private readonly log: Logger;
  private readonly position = new ProjectorPosition();
  private readonly shell: BatchShell;
  private readonly pipeline: BatchPipeline;
  private readonly failurePath: FailurePath;
  private readonly commands: OperatorCommands;

  constructor(private readonly options: ProjectorOptions) {
    this.name = options.projection.name;
    this.log = options.log.child({ projection: this.name });
    const delivery = new Delivery(options.projection, options.build);
    this.shell = new BatchShell(this.name, { ...options, log: this.log }, this.position, delivery);
    this.pipeline = new BatchPipeline(this.name, options, this.log, this.position, this.shell, delivery, this);
    const failed = (failure: FailureRecord) => this.options.onFailed?.(this, failure) ?? Promise.resolve();
    this.failurePath = new FailurePath(this.name, options, this.log, this.position, this.pipeline, {
      setState: (state) => this.setState(state),
      failed,
    });
    this.commands = new OperatorCommands(this.name, options, this.log, this.position, this.pipeline, this.failurePath, delivery, this);
  }

  /** Where the projection is: its checkpoint as far as this projector got (the row may lag: ProjectorPosition). */
  get checkpoint(): bigint {
    return this.position.checkpoint;
  }

  /** The fault the projection is stopped at while `failed` (what `skip` dead-letters). */
  get failure(): Failure | undefined {
    return this.failurePath.failure;
  }

  private get building(): boolean {
    return this.options.build?.building ?? false;
  }

  /** Loads the checkpoint; a projection left `failed` by an earlier run is retried from where it stopped. */
  async load(): Promise<void> {
    const checkpoint = await ensureCheckpoint(this.options.pool, this.options.names, this.name, this.options.projection.eventTypes);
    if (checkpoint.state === 'failed') {
      this.log.warn({ position: checkpoint.position.toString(), lastError: checkpoint.lastError }, 'retrying a projection that had failed');
    }
    // Claim the row for `status` right away (the lease is what really decides ownership).
    const state = asBuildState('catching_up', this.building);
    this.position.loaded(checkpoint, state);
    await setProjectionState(this.options.pool, this.options.names, this.name, state, this.options.owner);
    const { metrics } = this.options;
    metrics.checkpointPosition.set({ projection: this.name }, Number(this.position.checkpoint));
    // Zero-valued series from the start, so rate() and alert rules see the projection before its first event/error.
    metrics.eventsApplied.inc({ projection: this.name }, 0);
    metrics.handlerErrors.inc({ projection: this.name }, 0);
    metrics.deadLetters.inc({ projection: this.name }, 0);
  }

  setState(given: ProjectionState): void {
    const state = asBuildState(given, this.building);
    this.state = state;
    this.options.metrics.setProjectionState(this.name, state);
    // A failed or stopped projection reads nothing: it must not hold the shared reader's pages.
    this.options.reader.position(this.name, state === 'failed' || state === 'stopped' ? undefined : this.position.checkpoint);
  }

  /**
   * A building build that has caught up with H (a batch short of full, or nothing to read) becomes live here, at a
   * batch boundary, when its switch mode is auto (BuildSlot.caughtUp: the switch transaction).
   */
  async switchIfBuilt(): Promise<void> {
    const build = this.options.build;
    if (!build?.building || this.state === 'failed' || this.options.replay.rebuilding) return;
    const catchUpTo = async (position: bigint) => {
      // The batches in the switch run without a slot (BatchShell.run): the switch holds the lock they would wait on.
      await this.shell.duringSwitch(() => this.pipeline.applyUpTo(position));
      return this.position.checkpoint;
    };
    if ((await build.caughtUp(catchUpTo))?.switched) this.setState('running');
  }

  /**
   * Runs batches until `signal` aborts or ownership is lost. A failed projection stays in this loop, idle, until a
   * `retry` or `skip` command (or the next start) resumes it; commands are served between batches, so they never
   * race a batch of the same projection.
   */
  async run(signal: AbortSignal): Promise<void> {
    this.shell.stopSignal = signal;
    this.setState(this.options.replay.rebuilding ? 'replaying' : 'catching_up');
    this.running = true;
    try {
      while (!signal.aborted) {
        let more = false;
        try {
          await this.commands.serve(signal);
          if (this.state !== 'failed') more = readAgainAtOnce(await this.failurePath.runBatchWithRetries(signal));
        } catch (error) {
          if (signal.aborted) break;
          if (error instanceof OwnershipLostError || error instanceof BuildRetiredError) {
            this.position.forgetDeferred(); // not this projector's row to write any more
            if (error instanceof BuildRetiredError) {
              this.retired = error;
              this.log.info({ reason: error.message }, 'this version changed under it: stopping it here');
            } else this.log.error({ err: error }, 'lost ownership: stopping this projection here');
            this.setState('stopped');
            return;
          }
          // runBatchWithRetries settles every batch failure itself; this keeps the loop alive should a command's
          // own bookkeeping fail.
          this.log.error({ err: error }, 'projection loop error; trying again after a poll interval');
        }
        this.lastPassAt = Date.now();
        if (!more && !this.commands.waiting) await this.wake.wait(this.position.idleWaitMs(this.options.pollIntervalMs), signal);
      }
    } finally {
      this.running = false;
      // Stopping (a stop, a hand-off): what waits in memory is written, as a batch in flight would be; if this
      // instance may not any more, the next owner hands those events to the handler again, which wrote nothing for them.
      await this.pipeline.flushDeferred({ slot: false }).catch(() => {});
      // A loop that ended reads nothing more, whatever its last batch set (one still running when the runner dropped
      // the projection put it back into the shared reader, where it held pages for a projection this instance no
      // longer runs; the next owner may be another instance).
      this.options.reader.position(this.name, undefined);
      this.commands.rejectAll();
    }
  }

  /** Hands an operator command to the loop; resolves once it is carried out (OperatorCommands). */
  submit(row: CommandRow): Promise<CommandResult> {
    return this.commands.submit(row);
  }
}
