import type pg from 'pg';
import type { StoreNamesOptions } from '../../../src/db/identifiers.js';
import { sleep } from '../../../src/shared/time.js';
import { waitFor, type TestDatabase } from '../database.js';

/**
 * What the tests of a foreign source write with: the store's own writer in concurrent sessions (transactions of one
 * or two events, some rolled back) and one transaction held open past the gap timeout, committed once every
 * projection has passed its position (so that it is delivered late, exactly once).
 */

/** A foreign store as a test writes and reads it. */
export interface ForeignStore {
  /** The source's settings (as StoreNamesOptions: lease names, status; through sourceFlags: the CLI's flags). */
  source: StoreNamesOptions;
  /** A writer session (message-db's needs its search_path). */
  connect(): Promise<pg.Client>;
  /** Writes one event to `stream` in the open transaction of `client` with the store's own writer; its position. */
  write(client: pg.Client, stream: string, n: number): Promise<number>;
  /** Every committed position of the store, in order. */
  committed(): Promise<number[]>;
}

/** The command line's flags for a source's settings: `{ source: 'custom', eventsTable: 'app.ledger' }` → `--source custom --events-table app.ledger`. */
export function sourceFlags(source: StoreNamesOptions): string[] {
  return Object.entries(source).flatMap(([key, value]) => {
    const flag = `--${key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;
    if (typeof value === 'boolean') return value ? [flag] : [];
    return value === undefined ? [] : [flag, String(value)];
  });
}

/** The positions in `column` of `table` (as the test's role sees them), in order. */
export async function positionsIn(db: pg.Pool, table: string, column: string): Promise<number[]> {
  const { rows } = await db.query<{ p: number }>(`SELECT ${column}::int AS p FROM ${table} ORDER BY 1`);
  return rows.map((r) => r.p);
}

export interface Writers {
  readonly commits: number;
  readonly rollbacks: number;
  /** Resolves once `n` more transactions have committed. */
  committedMore(n: number, timeoutMs?: number): Promise<void>;
  /** Stops every writer after its current transaction; rejects with a writer's error. */
  stop(): Promise<void>;
}

/**
 * `count` sessions writing until stopped: stream `w<writer>-<0..3>` (message-db: one category per writer, whose
 * lock no other writer waits for), one event per transaction and two in every third, every sixth rolled back, every
 * seventh through a savepoint rolled back after a failing statement.
 */
export function startWriters(store: ForeignStore, count: number): Writers {
  const stopping = new AbortController();
  const stats = { commits: 0, rollbacks: 0 };
  const writer = async (w: number) => {
    const client = await store.connect();
    try {
      for (let i = 0; !stopping.signal.aborted; i++) {
        await client.query('BEGIN');
        await store.write(client, `w${w}-${i % 4}`, i);
        if (i % 7 === 3) {
          // An ORM's nested transaction: a failing statement aborts the transaction, rolled back to the savepoint;
          // the event written before it commits.
          await client.query('SAVEPOINT nested');
          await client.query('SELECT 1 / 0').catch(() => {});
          await client.query('ROLLBACK TO SAVEPOINT nested');
        }
        if (i % 3 === 0) await store.write(client, `w${w}-${i % 4}`, i);
        if (i % 6 === 5) {
          await client.query('ROLLBACK');
          stats.rollbacks++;
        } else {
          await client.query('COMMIT');
          stats.commits++;
        }
        await sleep(Math.random() * 20);
      }
    } finally {
      await client.end().catch(() => {});
    }
  };
  const running = Array.from({ length: count }, (_, w) => writer(w));
  // A failing writer is reported by stop(); until then it must not be an unhandled rejection.
  for (const r of running) r.catch(() => {});
  return {
    get commits() {
      return stats.commits;
    },
    get rollbacks() {
      return stats.rollbacks;
    },
    async committedMore(n, timeoutMs = 20_000) {
      const target = stats.commits + n;
      await waitFor(`${n} more commits of the writers`, () => stats.commits >= target, timeoutMs);
    },
    async stop() {
      stopping.abort();
      await Promise.all(running);
    },
  };
}

export interface HeldTransaction {
  /** The position its event took (missing for everyone else until it commits). */
  position: number;
  /**
   * Waits until the tracker has given its gap up (timed out) and every projection of `projections` has passed it,
   * then commits: the event is late for each of them.
   */
  commitLate(db: TestDatabase, projections: string[], timeoutMs?: number): Promise<void>;
  /** Ends the session (rolls back if still open). */
  end(): Promise<void>;
}

/** A transaction that writes one event to stream `held-1` and stays open until commitLate. */
export async function holdOneOpen(store: ForeignStore): Promise<HeldTransaction> {
  const client = await store.connect();
  await client.query('BEGIN');
  const position = await store.write(client, 'held-1', 0);
  return {
    position,
    async commitLate(db, projections, timeoutMs = 30_000) {
      await waitFor(
        `the held position ${position} given up and passed by ${projections.join(', ')}`,
        async () => {
          const { rows } = await db.pool.query<{ timed_out: boolean; passed: boolean }>(
            `SELECT EXISTS (SELECT 1 FROM projection_gaps
                             WHERE resolution = 'timed_out' AND $1 BETWEEN from_position AND to_position) AS timed_out,
                    (SELECT count(*)::int FROM projection_checkpoints WHERE name = ANY($2) AND position > $1) = $3 AS passed`,
            [position, projections, projections.length],
          );
          return rows[0]!.timed_out && rows[0]!.passed;
        },
        timeoutMs,
      );
      await client.query('COMMIT');
    },
    async end() {
      await client.end().catch(() => {});
    },
  };
}
