import type pg from 'pg';
import type { Logger } from 'pino';
import type { StoreNames } from '../db/identifiers.js';
import { failReplay, findRunningReplay, recordReplayProgress } from './requests.js';

/**
 * The replay of one owned projection: the one owner of its state, changed only through the methods below. The runner
 * creates one per projector it starts and serves a request with it; the projector asks it whether a rebuild is
 * running and whether a checkpoint reaches its target, and tells it about every batch it commits.
 *
 *   serve(request) ──▶ rebuilding ──recordBatch (checkpoint ≥ target)──▶ request done
 *                          │
 *                          └──recordBatch (failed batch) or fail()──▶ request failed
 *
 * Two pieces of state, with lifetimes of their own:
 * - the request row being served, with the progress not yet written to it;
 * - the rebuild target, while the checkpoint has not reached it (the projection is `replaying` meanwhile). It outlives
 *   a request that ended failed: the read model is still half rebuilt, so a projection resumed by `retry` is
 *   `replaying` again until it reaches the target, and nothing is reported any more.
 */

/** Replay progress goes to the database at most this often (the CLI polls it), and once at the end. */
export const REPLAY_REPORT_INTERVAL_MS = 250;

/** What a committed batch means for the request being served (see replayStep). */
export type ReplayStep = 'fail' | 'finish' | 'report' | 'wait';

/**
 * The decision after a committed batch: a batch that marked the projection failed ends the request failed; one that
 * reached the target (nothing left to rebuild) ends it done; otherwise the progress is written when the last write
 * is at least REPLAY_REPORT_INTERVAL_MS old, else kept for later.
 */
export function replayStep(batch: { failed: boolean; rebuilt: boolean; sinceReportMs: number }): ReplayStep {
  if (batch.failed) return 'fail';
  if (batch.rebuilt) return 'finish';
  return batch.sinceReportMs >= REPLAY_REPORT_INTERVAL_MS ? 'report' : 'wait';
}

/** A request whose reset is done: rebuild from the reset checkpoint up to `target` (the head at the reset). */
export interface ReplayRequest {
  id: bigint;
  target: bigint;
}

/** What the projector reports after each committed batch. */
export interface CommittedBatch {
  /** Events applied by the batch (late ones included). */
  applied: number;
  /** The checkpoint the batch committed. */
  checkpoint: bigint;
  /** The batch marked the projection failed (the error policy `stop`). */
  failed: boolean;
}

export interface ReplayOptions {
  pool: pg.Pool;
  names: StoreNames;
  projection: string;
  log: Logger;
}

export class Replay {
  /** The request row being served: progress not yet written to it, and when it last was (0: never). */
  private request: { id: bigint; unreported: number; reportedAt: number } | undefined;
  /** Set while the read model is being rebuilt; cleared when a committed checkpoint reaches it. */
  private until: bigint | undefined;

  constructor(private readonly options: ReplayOptions) {}

  /**
   * Serves `request`. A target of 0 (the store was empty at the reset) has nothing to rebuild: no `replaying` state,
   * and the request is done as soon as finishIfNothingToRebuild is called.
   */
  serve(request: ReplayRequest): void {
    this.request = { id: request.id, unreported: 0, reportedAt: 0 };
    this.until = request.target > 0n ? request.target : undefined;
  }

  /**
   * Carries on the replay that a previous owner of the projection was running when it died or gave the projection up,
   * its reset done (findRunningReplay); one whose reset never committed is claimed again instead (claimReplays).
   */
  async resumeRunning(): Promise<void> {
    const { pool, names, projection } = this.options;
    const running = await findRunningReplay(pool, names, projection);
    if (running) this.serve(running);
  }

  /** A rebuild is running: the checkpoint has not reached the target yet. */
  get rebuilding(): boolean {
    return this.until !== undefined;
  }

  /** The rebuild's target, while it runs. */
  get target(): bigint | undefined {
    return this.until;
  }

  /** A rebuild is running and a checkpoint at `checkpoint` completes it. */
  reachedBy(checkpoint: bigint): boolean {
    return this.until !== undefined && checkpoint >= this.until;
  }

  /**
   * A batch committed (or the projector found, with nothing to read, that its checkpoint reaches the target): the
   * rebuild ends when the checkpoint reaches the target, and the request being served records the batch (replayStep).
   * A write that fails throws and keeps the progress, so the next batch writes it again.
   */
  async recordBatch(batch: CommittedBatch): Promise<void> {
    if (this.reachedBy(batch.checkpoint)) this.until = undefined;
    const request = this.request;
    if (!request) return;
    request.unreported += batch.applied;
    const step = replayStep({ failed: batch.failed, rebuilt: this.until === undefined, sinceReportMs: Date.now() - request.reportedAt });
    if (step === 'fail') return this.fail();
    if (step === 'finish') return this.finish(request, batch.checkpoint);
    if (step === 'report') {
      const { pool, names } = this.options;
      const applied = request.unreported;
      await recordReplayProgress(pool, names, request.id, applied, false);
      request.unreported -= applied;
      request.reportedAt = Date.now();
    }
  }

  /** The empty store: a request served with target 0 ends done at once, its projection at `checkpoint`. */
  async finishIfNothingToRebuild(checkpoint: bigint): Promise<void> {
    if (this.request && this.until === undefined) await this.finish(this.request, checkpoint);
  }

  /**
   * The projection failed while serving the request: it ends failed with `reason`, else the error the projection
   * recorded (its checkpoint row), so that `replay` stops following it and says why. Nothing happens when no request
   * is served.
   */
  async fail(reason?: string): Promise<void> {
    const request = this.request;
    if (!request) return;
    // Forgotten before the write: a request is failed once, even if that write fails.
    this.request = undefined;
    const { pool, names, projection, log } = this.options;
    const error = await failReplay(pool, names, request.id, request.unreported, reason);
    log.error({ projection, replay: request.id.toString(), error }, 'replay failed: the projection failed while rebuilding');
  }

  /** The request ends done with the progress not yet written; a failed write leaves it served, for the next batch. */
  private async finish(request: NonNullable<Replay['request']>, checkpoint: bigint): Promise<void> {
    const { pool, names, projection, log } = this.options;
    await recordReplayProgress(pool, names, request.id, request.unreported, true);
    log.info({ projection, position: checkpoint.toString() }, 'replay finished: caught up');
    this.request = undefined;
  }
}
