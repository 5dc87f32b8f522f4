import pg from 'pg';
import { storeNames, type StoreNames, type StoreNamesOptions } from '../db/identifiers.js';
import { ProjectionFailedError, ProjectionRunnerError, UnknownProjectionError, WaitTimeoutError } from '../errors.js';
import { assess, explainBehind, LOOKS, noNews, parseAppliedNotice, parsePosition, worthALook, type ProjectionProgress } from './decide.js';
import { cannotRaise, lostPreparedStatement, raiseWaited, readBlockers, readProgress } from './progress-sql.js';

export interface ProjectionWaiterOptions extends StoreNamesOptions {
  /** Where the store is; or `pool`, from which the waiter takes one connection for as long as it is open. */
  connectionString?: string;
  pool?: pg.Pool;
}

export interface WaitOptions {
  /** The projections to wait for (default: every projection with a checkpoint), each in its live version. */
  projections?: readonly string[];
  /** Default 5,000 ms. */
  timeoutMs?: number;
  signal?: AbortSignal;
}

export interface WaitResult {
  position: bigint;
  /** Each projection waited for, and the position up to which it had applied every event it takes. */
  projections: Record<string, bigint>;
}

export const DEFAULT_WAIT_TIMEOUT_MS = 5_000;

/** After a lost connection: how long before the next attempt (waits keep their own deadlines meanwhile). */
const RECONNECT_MS = 250;

/** How long the daemons take a raised waited position as pending unless the waiter renews it (at half of it). */
const WAIT_TTL_MS = 10_000;

interface PendingWait {
  target: bigint;
  projections: readonly string[] | undefined;
  timeoutMs: number;
  resolve: (result: WaitResult) => void;
  reject: (error: Error) => void;
  /**
   * The last progress seen of the projections it waits for that are short of it: what a timeout explains, and what
   * news must clear before it is worth a look (worthALook). Undefined until its first look.
   */
  behind: ProjectionProgress[] | undefined;
  done: () => void;
}

/**
 * Waits until the read models have applied a position: read your own writes across processes. One waiter serves any
 * number of concurrent waits over one connection: each look reads every projection's progress in one statement for
 * all of them (readProgress), so a thousand waiting requests cost what one does. Looks run only while waits are
 * pending, driven by notifications on that connection: the waiter tells the daemons the highest position it waits
 * for (raiseWaited, renewed while waits are pending), their projectors then write the moves a wait needs and notify
 * every checkpoint they commit (the applied channel), and the high-water leader every move of H. A look comes at once
 * for a new wait (one above every H known only raises: placeAboveHighWater), then once per notification that may settle one (worthALook; notices arriving during a look come to
 * one more), and LOOKS.fallbackMs after the last look whatever was heard. Writers pay nothing for any of it.
 */
export class ProjectionWaiter {
  private readonly names: StoreNames;
  private readonly waits = new Set<PendingWait>();
  private client: pg.ClientBase | undefined;
  private releaseClient: ((error?: Error) => void) | undefined;
  private connecting: Promise<pg.ClientBase> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private timerAt = Number.POSITIVE_INFINITY;
  private ticking = false;
  private tickAgain = false;
  /** What notifications told since the last look began (worthALook). */
  private news = noNews();
  /** The live builds the last look saw, and what it saw of them. */
  private known = new Set<string>();
  private lastProgress: ProjectionProgress[] | undefined;
  /** The highest H the last look or a notification told; when the last look began (Date.now()). */
  private highWater = -1n;
  private lookedAt = 0;
  /** The waited position this waiter last raised, and until when (Date.now()) that holds without renewal. */
  private raised = { position: -1n, until: 0 };
  /** False once the store's schema has shown it predates the waited position (migration 13). */
  private raises = true;
  /** Whether the look runs as a statement prepared once per session (false once a pooler lost one: lostPreparedStatement). */
  private named = true;
  private closed = false;

  constructor(private readonly options: ProjectionWaiterOptions) {
    if (!options.connectionString && !options.pool) {
      throw new ProjectionRunnerError('ProjectionWaiter needs a connectionString or a pool');
    }
    this.names = storeNames(options);
  }

  /**
   * Resolves when every projection waited for has applied every committed event at or below `position` (events of
   * types it does not take count as applied; a late event counts once its late delivery has committed). Rejects with
   * ProjectionFailedError at once when one is failed at or below it, UnknownProjectionError at once for a name that
   * has no checkpoint, WaitTimeoutError (which names each projection still behind, and why) after `timeoutMs`.
   */
  waitFor(position: bigint | number | string, options: WaitOptions = {}): Promise<WaitResult> {
    const target = parsePosition(position);
    if (target === undefined) {
      return Promise.reject(new ProjectionRunnerError(`not a position: ${String(position)} (a whole number from 0)`));
    }
    if (this.closed) return Promise.reject(new ProjectionRunnerError('the waiter is closed'));
    const timeoutMs = options.timeoutMs ?? DEFAULT_WAIT_TIMEOUT_MS;
    if (!Number.isFinite(timeoutMs) || timeoutMs < 0) {
      return Promise.reject(new ProjectionRunnerError(`timeoutMs must be a number of milliseconds from 0 (got ${timeoutMs})`));
    }
    const { signal } = options;
    if (signal?.aborted) return Promise.reject(abortReason(signal));
    return new Promise<WaitResult>((resolve, reject) => {
      const onAbort = () => finish(() => reject(abortReason(signal!)));
      const timer = setTimeout(() => void this.timeOut(wait), timeoutMs);
      const finish = (settle: () => void) => {
        if (!this.waits.delete(wait)) return;
        wait.done();
        settle();
      };
      const wait: PendingWait = {
        target,
        projections: options.projections,
        timeoutMs,
        behind: undefined,
        resolve: (result) => finish(() => resolve(result)),
        reject: (error) => finish(() => reject(error)),
        done: () => {
          clearTimeout(timer);
          signal?.removeEventListener('abort', onAbort);
        },
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.waits.add(wait);
      this.schedule(0);
    });
  }

  /** Rejects the waits still pending and gives the connection back. */
  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.timer);
    for (const wait of [...this.waits]) wait.reject(new ProjectionRunnerError('the waiter was closed before the position was applied'));
    await this.connecting?.catch(() => undefined);
    this.dropClient();
  }

  /** How many waits are pending (for metrics and tests). */
  get pending(): number {
    return this.waits.size;
  }

  private schedule(delayMs: number): void {
    if (this.closed || this.waits.size === 0) return;
    const at = Date.now() + delayMs;
    if (this.timer && this.timerAt <= at) return;
    clearTimeout(this.timer);
    this.timerAt = at;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.timerAt = Number.POSITIVE_INFINITY;
      void this.tick();
    }, delayMs);
  }

  private async tick(): Promise<void> {
    if (this.ticking) {
      this.tickAgain = true;
      return;
    }
    this.ticking = true;
    let delay: number = LOOKS.fallbackMs;
    try {
      const client = await this.connect();
      const raise = this.raise();
      const sentAt = Date.now();
      if (sentAt - this.lookedAt < LOOKS.fallbackMs && this.placeAboveHighWater() && !this.worthALook()) {
        // New waits above H: nothing a look could settle yet; the daemons are told of them (if that is news) alone.
        if (raise) await this.raiseAlone(client, raise);
      } else {
        this.news = noNews();
        this.lookedAt = sentAt;
        await this.check(client, { raise });
      }
      // Only once it is done: a look that failed has told the daemons nothing, and the next one tells them again.
      if (raise && this.raises) this.raised = { position: raise.position, until: sentAt + raise.ttlMs };
      // Notices that came during the look: one more look if they may settle a wait.
      if (this.worthALook()) delay = 0;
    } catch {
      // The connection broke or the database is away: waits keep their deadlines; try again a little later.
      this.dropClient();
      delay = RECONNECT_MS;
    } finally {
      this.ticking = false;
    }
    if (this.tickAgain) {
      this.tickAgain = false;
      delay = 0;
    }
    this.schedule(delay);
  }

  /**
   * New waits (not looked at yet) whose positions are above the highest H known: no look can settle them yet, so
   * each is given, as what holds it, its projections as the last look saw them (worthALook then waits for the news
   * that may settle it). False when any of them needs a look: a position at or below H, a projection the last look
   * did not see (unknown: refused at once), or a failed projection (refused at once).
   */
  private placeAboveHighWater(): boolean {
    const fresh = [...this.waits].filter((w) => w.behind === undefined);
    const seen = this.lastProgress;
    if (fresh.length === 0 || !seen || seen.some((p) => p.failure)) return false;
    const byName = new Map(seen.map((p) => [p.projection, p]));
    const placed = fresh.map((w) => ({ w, of: w.projections ? w.projections.map((name) => byName.get(name)) : seen }));
    if (placed.some(({ w, of }) => w.target <= this.highWater || of.some((p) => p === undefined))) return false;
    for (const { w, of } of placed) w.behind = of as ProjectionProgress[];
    return true;
  }

  private async raiseAlone(client: pg.ClientBase, raise: { position: bigint; ttlMs: number }): Promise<void> {
    try {
      await raiseWaited(client, this.names, raise);
    } catch (error) {
      if (!cannotRaise(error)) throw error;
      this.raises = false;
    }
  }

  /**
   * What the daemons are to be told of the pending waits with the next look (readProgress raises it): the highest
   * position, when it is higher than this waiter last said or that is about to lapse. Undefined: nothing to say.
   */
  private raise(): { position: bigint; ttlMs: number } | undefined {
    if (!this.raises || this.waits.size === 0) return undefined;
    const upTo = [...this.waits].reduce((max, w) => (w.target > max ? w.target : max), 0n);
    const now = Date.now();
    if (upTo <= this.raised.position && now < this.raised.until - WAIT_TTL_MS / 2) return undefined;
    const position = upTo > this.raised.position || now >= this.raised.until ? upTo : this.raised.position;
    return { position, ttlMs: WAIT_TTL_MS };
  }

  /** The look's read, raising the waited position with it when `raise` says; without on a store that predates it. */
  private async readProgress(
    client: pg.ClientBase,
    upTo: bigint,
    raise: { position: bigint; ttlMs: number } | undefined,
    explain: boolean,
  ): Promise<ProjectionProgress[]> {
    try {
      return await readProgress(client, this.names, undefined, upTo, { raise, explain, named: this.named });
    } catch (error) {
      if (this.named && lostPreparedStatement(error)) {
        // Through a pooler in transaction mode: unnamed statements from now on (planned at every look, but they work).
        this.named = false;
        return this.readProgress(client, upTo, raise, explain);
      }
      if (!raise || !cannotRaise(error)) throw error;
      // The daemons cannot hear of these waits (nor does one of a release before it notify): the fallback looks serve
      // them. A role that may read the checkpoints may still wait.
      this.raises = false;
      return readProgress(client, this.names, undefined, upTo, { explain, named: this.named });
    }
  }

  private worthALook(): boolean {
    return worthALook([...this.waits], this.news, this.known);
  }

  /** One look at every projection for every pending wait, raising the waited position with it; settles what it can. */
  private async check(
    client: pg.ClientBase,
    { raise, explain = false }: { raise?: { position: bigint; ttlMs: number }; explain?: boolean } = {},
  ): Promise<void> {
    const waits = [...this.waits];
    if (waits.length === 0) return;
    const upTo = waits.reduce((max, w) => (w.target > max ? w.target : max), 0n);
    const progress = await this.readProgress(client, upTo, raise, explain);
    const byName = new Map(progress.map((p) => [p.projection, p]));
    this.known = new Set(progress.map((p) => p.slot));
    this.lastProgress = progress;
    if (progress[0] && progress[0].highWater > this.highWater) this.highWater = progress[0].highWater;
    for (const wait of waits) {
      const unknown = wait.projections?.find((name) => !byName.has(name));
      if (unknown !== undefined) {
        wait.reject(new UnknownProjectionError(unknown, [...byName.keys()]));
        continue;
      }
      const of = wait.projections ? wait.projections.map((name) => byName.get(name)!) : progress;
      const verdicts = of.map((p) => ({ p, verdict: assess(p, wait.target) }));
      const failed = verdicts.find((v) => v.verdict.kind === 'failed');
      if (failed && failed.verdict.kind === 'failed') {
        const { position, type, message } = failed.verdict;
        wait.reject(new ProjectionFailedError(failed.p.projection, position, type, message));
        continue;
      }
      wait.behind = verdicts.filter((v) => v.verdict.kind === 'behind').map((v) => v.p);
      if (wait.behind.length > 0) continue;
      wait.resolve({ position: wait.target, projections: Object.fromEntries(of.map((p) => [p.projection, p.covered])) });
    }
  }

  /** A notification: kept as news, and a look at once when it may settle a wait. */
  private heard(channel: string, payload: string | undefined): void {
    if (channel === this.names.highWaterChannel) {
      const position = parsePosition(payload);
      if (position !== undefined && position > this.news.highWater) this.news.highWater = position;
      if (position !== undefined && position > this.highWater) this.highWater = position;
    } else {
      const notice = parseAppliedNotice(payload);
      if (!notice) return;
      if (notice.failed) this.news.failed.add(notice.slot);
      if (notice.position > (this.news.applied.get(notice.slot) ?? -1n)) this.news.applied.set(notice.slot, notice.position);
    }
    if (this.worthALook()) this.schedule(0);
  }

  /** The deadline passed: one last look (it may just have been reached), then the explanation. */
  private async timeOut(wait: PendingWait): Promise<void> {
    if (!this.waits.has(wait)) return;
    try {
      const client = await this.connect();
      await this.check(client, { explain: true });
      if (!this.waits.has(wait)) return;
      // As this look saw them: a look in between (notices) reads no owner, replay or build.
      const behind = wait.behind ?? [];
      const blockers = await readBlockers(client, this.names, wait.target);
      wait.reject(
        new WaitTimeoutError(
          wait.target,
          wait.timeoutMs,
          behind.map((p) => explainBehind(p, wait.target, blockers)),
        ),
      );
    } catch (error) {
      wait.reject(
        new WaitTimeoutError(wait.target, wait.timeoutMs, [
          {
            projection: '(all)',
            position: 0n,
            state: 'unknown',
            owner: null,
            reason: `the database could not be read: ${(error as Error).message}`,
          },
        ]),
      );
    }
  }

  private async connect(): Promise<pg.ClientBase> {
    if (this.client) return this.client;
    this.connecting ??= this.open().finally(() => (this.connecting = undefined));
    return this.connecting;
  }

  private async open(): Promise<pg.ClientBase> {
    const { pool, connectionString } = this.options;
    let client: pg.ClientBase;
    if (pool) {
      const pooled = await pool.connect();
      this.releaseClient = (error) => pooled.release(error ?? true);
      client = pooled;
    } else {
      const own = new pg.Client({ connectionString, application_name: 'projection-runner waiter' });
      await own.connect();
      this.releaseClient = () => void own.end().catch(() => {});
      client = own;
    }
    // Only the connection in use is dropped: an old one's late error must not take its successor down.
    client.on('error', () => {
      if (this.client === client) this.dropClient();
    });
    client.on('notification', (message) => this.heard(message.channel, message.payload));
    await client.query(
      `LISTEN ${pg.escapeIdentifier(this.names.highWaterChannel)}; LISTEN ${pg.escapeIdentifier(this.names.appliedChannel)}`,
    );
    if (this.closed) {
      this.releaseClient();
      throw new ProjectionRunnerError('the waiter is closed');
    }
    this.client = client;
    return client;
  }

  private dropClient(): void {
    // A new session raises again: a crash restart of PostgreSQL, which drops every session, also empties the unlogged
    // table that held the raise.
    this.raised = { position: -1n, until: 0 };
    const release = this.releaseClient;
    this.client = undefined;
    this.releaseClient = undefined;
    release?.(new Error('dropped'));
  }
}

/** What an aborted signal carries, as an Error (AbortSignal.abort() without a reason gives a DOMException, also one). */
function abortReason(signal: AbortSignal): Error {
  const reason: unknown = signal.reason;
  return reason instanceof Error ? reason : new ProjectionRunnerError(`the wait was aborted: ${String(reason)}`);
}
