import type pg from 'pg';
import type { Logger } from 'pino';
import type { StoreNames } from '../db/identifiers.js';
import type { RunnerMetrics } from '../metrics/registry.js';
import {
  loadHighWaterState,
  persistDecision,
  readObservation,
  readPersistedHighWater,
  runningWriters,
  takeFence,
  type Waited,
} from './tracker-sql.js';
import {
  awaitedWriters,
  mayMoveInObservation,
  needsFence,
  nextPassDelay,
  observe,
  withoutFences,
  writtenByObservation,
  type HighWaterSettings,
  type HighWaterState,
  type OpenGap,
} from './decisions.js';
import type { SequenceSample } from './evidence-rules.js';
import type { LeaseSession } from '../ownership/leases.js';
import { withRetries } from '../db/retry.js';
import { WakeSignal } from '../shared/wake-signal.js';
import { fenced, nextWake, takeOverWake, type WakeSettings, type WakeState } from './wake.js';
import { writeWakeFlag } from './wake-sql.js';

/** Looks at the head that find nothing before the leader asks writers to notify and goes to sleep (wake.ts). */
export const IDLE_LOOKS = 10;

/** Evidence that gaps are dead (evidence.ts). Collected before the observation, so its snapshot is newer. */
export interface GapEvidenceSource {
  collect(state: HighWaterState): Promise<((gap: OpenGap) => boolean) | undefined>;
  /** Every observation samples the sequence: when it had not yet reached a value tells who cannot hold it. */
  recordSample(sample: SequenceSample, openGaps: readonly OpenGap[]): void;
  /**
   * The sequence behind the positions (a regclass literal) when the role may read it (SELECT or USAGE); undefined:
   * observations take no samples.
   */
  readonly sampledSequence: string | undefined;
  /** How often to look again while gaps are open and evidence may settle them. */
  readonly recheckMs: number;
}

export interface HighWaterTrackerOptions {
  /** The tracker's own sessions: gap evidence ignores them (they never write events). */
  pool: pg.Pool;
  names: StoreNames;
  settings: HighWaterSettings;
  pollIntervalMs: number;
  /** How often the leader looks at the head while events flow (wake.ts). */
  followIntervalMs: number;
  /** The write rate (events/s) from which the leader follows the head rather than sleep between NOTIFYs (wake.ts). */
  followAbove: number;
  leases: LeaseSession;
  log: Logger;
  metrics: RunnerMetrics;
  /** Scan window above H per pass; the reply carries only holes and bounds, so this can be large. */
  windowSize?: number;
  /**
   * H moved (or the leader announced it, or a late commit was recorded): wake the projectors. `onlyHighWater`: this
   * leader's pass changed nothing but H (and the head) since the last call: no gap given up, no late notice, so what
   * projectors knew of those still holds (BatchContexts.advance).
   */
  onAdvance: (highWater: bigint, onlyHighWater: boolean) => void;
  /**
   * What every pass read of the pending waits (src/wait/): the highest position waited for and for how long, or
   * undefined when none is pending. Read in a statement the pass runs anyway; a waiter's NOTIFY wakes the pass.
   */
  onWaited: (waited: Waited | undefined) => void;
}

/**
 * One per process. The instance holding the 'high-water' lease observes the events table, decides (high-water.ts)
 * and persists H and the gaps; the others read the persisted H. Every pass is retried through database outages.
 */
export class HighWaterTracker {
  private readonly wake = new WakeSignal();
  private state: HighWaterState | undefined;
  private evidence: GapEvidenceSource | undefined;
  private announced: bigint | undefined;
  /** The leader's sleep/wake state (wake.ts); undefined until it leads (a takeover starts following). */
  private wakeState: WakeState | undefined;
  private wakeFlagFailed = false;
  /** Server clock of the last observation (when to take a fence is decided on the server's clock). */
  private serverNow = 0;
  /** Wall-clock time of the last completed pass, for the /healthz watchdog. */
  lastPassAt = Date.now();
  private completedPasses = 0;
  highWater = 0n;
  head = 0n;
  leader = false;

  /** Passes completed (successful or not), read-only: tests wait for a number of them instead of sleeping. */
  get passes(): number {
    return this.completedPasses;
  }

  constructor(private readonly options: HighWaterTrackerOptions) {
    options.leases.onLost(() => {
      this.leader = false;
      this.state = undefined;
      this.wakeState = undefined;
    });
  }

  notify(): void {
    this.wake.notify();
  }

  /** Evidence is set up after the database is reachable (it checks the role's privileges). */
  useEvidence(evidence: GapEvidenceSource | undefined): void {
    this.evidence = evidence;
  }

  async run(signal: AbortSignal): Promise<void> {
    const { log, metrics } = this.options;
    while (!signal.aborted) {
      let delay = this.options.pollIntervalMs;
      const started = performance.now();
      try {
        delay = await withRetries(() => this.pass(), {
          operation: 'high_water',
          signal,
          failed: 'high-water pass failed',
          log,
          errors: metrics.dbErrors,
        });
      } catch (error) {
        if (signal.aborted) break;
        // Not a database hiccup: log loudly, keep the loop alive, try again after a poll interval.
        log.error({ err: error }, 'high-water pass failed');
      }
      metrics.highWaterPass.observe((performance.now() - started) / 1000);
      this.lastPassAt = Date.now();
      this.completedPasses++;
      await this.wake.wait(delay, signal);
    }
    await this.leaveWakeFlag();
  }

  /** Where the tracker stands on waking: its mode while it leads (tests and the status of a leader). */
  get wakeMode(): WakeState['mode'] | undefined {
    return this.leader ? this.wakeState?.mode : undefined;
  }

  private get wakeSettings(): WakeSettings {
    const { followIntervalMs, pollIntervalMs, followAbove } = this.options;
    return { followIntervalMs, pollIntervalMs, idleAfterMs: IDLE_LOOKS * followIntervalMs, followAbovePerSecond: followAbove };
  }

  /**
   * A leader that stops: when other instances run, writers notify, so that one of them takes the lead at the next
   * write rather than at its next poll; alone, writers go silent (nobody listens any more).
   */
  private async leaveWakeFlag(): Promise<void> {
    if (!this.leader) return;
    const { pool, names, leases, log } = this.options;
    try {
      const others = (await leases.liveInstances('instance')) > 1;
      await writeWakeFlag(pool, names, others ? 'notify' : 'silent');
    } catch (error) {
      log.warn({ err: error }, 'could not leave the wake-up flag at stop; the next leader sets it');
    }
  }

  /** One pass; returns how long to sleep before the next one unless woken. */
  async pass(): Promise<number> {
    const { leases, names, pool, settings, log, metrics } = this.options;
    const { evidence } = this;
    // A pass that takes the lead over publishes as if H had been read: what other leaders did meanwhile (ranges given
    // up, late commits), this instance's projectors may not have heard of (their NOTIFY is only a hint).
    const tookOver = !this.leader;
    if (!this.leader) {
      this.leader = await leases.tryAcquire('high-water', 'leader');
      if (this.leader) {
        // Take over: the fence that makes a stale leader's next write fail (persistDecision checks it).
        await pool.query(`UPDATE ${names.q.highWater} SET leader = $1`, [leases.owner]);
        this.state = await loadHighWaterState(pool, names);
        // A foreign table's fences wait for writers this leader never saw (decisions.ts): fenced again.
        if (names.source.kind !== 'native') this.state.watched = withoutFences(this.state.watched);
        log.info({ highWater: this.state.highWater.toString(), openGaps: this.state.openGaps.length }, 'leading the high-water tracker');
      }
    }
    if (!this.leader) {
      const persisted = await readPersistedHighWater(pool, names);
      this.options.onWaited(persisted.waited);
      this.publish(persisted.highWater, persisted.head, persisted.openGaps, persisted.oldestGapAgeSeconds);
      return this.options.pollIntervalMs;
    }

    const state = this.state!;
    const isProvenDead = state.openGaps.length > 0 ? await evidence?.collect(state) : undefined;
    // The fence is taken before the observation, so the observation's snapshot is the later one (high-water.ts).
    const fence = needsFence(state, this.serverNow, settings) ? await takeFence(pool, names) : undefined;
    // Before the observation too: a writer ended by now has its commit in the observation's snapshot.
    const awaited = awaitedWriters(state.watched, fence);
    const running = awaited.length > 0 ? await runningWriters(pool, awaited) : undefined;
    const { observation, sample, movedTo, waited } = await readObservation(
      pool,
      names,
      state.highWater,
      this.options.windowSize ?? 100_000,
      state.watched,
      evidence?.sampledSequence,
      mayMoveInObservation(state) ? { leader: leases.owner } : undefined,
    );
    observation.fence = fence;
    observation.running = running;
    this.options.onWaited(waited);
    this.serverNow = observation.now;
    if (sample) evidence?.recordSample(sample, state.openGaps);
    const decision = observe(state, observation, settings, isProvenDead);
    const written = writtenByObservation(decision, movedTo);
    const onlyHighWater = !tookOver && written;
    if (decision.changed && !written && (await persistDecision(pool, names, decision, leases.owner)) === 'not_leader') {
      log.warn('another instance leads the high-water tracker now; standing down');
      this.leader = false;
      this.state = undefined;
      this.wakeState = undefined;
      await leases.release('high-water', 'leader');
      return this.options.pollIntervalMs;
    }
    this.state = decision.state;

    for (const gap of decision.opened) {
      log.info({ gap: { from: gap.from.toString(), to: gap.to.toString() } }, 'gap opened: holding the high-water mark');
    }
    for (const r of decision.resolved) {
      const waitSeconds = Math.max(0, (r.resolvedAt - r.firstSeenAt) / 1000);
      metrics.gapsResolved.inc({ resolution: r.resolution });
      metrics.gapWait.observe({ resolution: r.resolution }, waitSeconds);
      const line = { gap: { from: r.from.toString(), to: r.to.toString() }, resolution: r.resolution, waitSeconds };
      if (r.resolution === 'timed_out') log.warn(line, 'gap timed out: moving the high-water mark past it');
      else log.info(line, `gap ${r.resolution}`);
    }
    for (const position of decision.late) {
      metrics.lateEvents.inc();
      log.error(
        { position: position.toString() },
        'late event: committed after its gap was declared dead; delivering it to projections that passed it',
      );
    }
    for (const w of decision.settled) {
      log.debug({ gap: { from: w.from.toString(), to: w.to.toString() } }, 'given-up gap settled: proven unfillable, no longer watched');
    }
    metrics.gapsWatched.set(decision.state.watched.length);
    const { openGaps } = decision.state;
    const oldest = openGaps.reduce((min, g) => Math.min(min, g.firstSeenAt), Number.POSITIVE_INFINITY);
    this.publish(
      decision.state.highWater,
      decision.state.head,
      openGaps.length,
      openGaps.length > 0 ? Math.max(0, (observation.now - oldest) / 1000) : 0,
      onlyHighWater,
    );
    if (decision.late.length > 0) this.options.onAdvance(this.highWater, false);

    // After the projectors were woken: a flag write (at a change of state only) never delays what this pass found.
    const wakeDelay = await this.stepWake(state, decision.state, observation.xmin, observation.now);
    return Math.min(wakeDelay, nextPassDelay(decision.state, settings, observation.now, this.options.pollIntervalMs, evidence?.recheckMs));
  }

  /** The sleep/wake protocol's step for this pass (wake.ts): the flag written first, then the state; the pause. */
  private async stepWake(before: HighWaterState, after: HighWaterState, xmin: bigint | null, now: number): Promise<number> {
    const { pool, names } = this.options;
    // Positions the head (or H) moved by: the write rate's count (wake.ts).
    const headMoved = after.head - before.head;
    const highWaterMoved = after.highWater - before.highWater;
    const moved = headMoved > highWaterMoved ? headMoved : highWaterMoved;
    const newEvents = moved > 0n ? Number(moved) : 0;
    const step =
      this.wakeState === undefined
        ? takeOverWake(now, this.wakeSettings)
        : nextWake(this.wakeState, { sawNew: newEvents > 0, newEvents, xmin, now }, this.wakeSettings);
    let fence: bigint | undefined;
    if (step.flag) {
      try {
        fence = await writeWakeFlag(pool, names, step.flag);
        this.wakeFlagFailed = false;
      } catch (error) {
        // Never holds H: the state stays as it was (following keeps looking, sleeping keeps the writers notifying)
        // and the next pass tries again. Said once, not at every pass.
        if (!this.wakeFlagFailed) this.options.log.error({ err: error }, 'could not set the wake-up flag; trying again at every pass');
        this.wakeFlagFailed = true;
        return step.state.mode === 'following' ? step.delayMs : Math.min(step.delayMs, this.wakeSettings.followIntervalMs);
      }
    }
    this.wakeState = fence === undefined ? step.state : fenced(step.state, fence);
    return step.delayMs;
  }

  /** `onlyHighWater`: see onAdvance; false where H was read rather than decided here (another instance leads). */
  private publish(highWater: bigint, head: bigint, openGaps: number, oldestAgeSeconds: number, onlyHighWater = false): void {
    const { metrics } = this.options;
    this.highWater = highWater;
    this.head = head;
    metrics.highWaterPosition.set(Number(highWater));
    metrics.headPosition.set(Number(head));
    metrics.gapsOpen.set(openGaps);
    metrics.gapOldestAge.set(oldestAgeSeconds);
    if (this.announced === undefined || highWater > this.announced) {
      this.announced = highWater;
      this.options.onAdvance(highWater, onlyHighWater);
    }
  }
}
