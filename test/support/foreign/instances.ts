import type pg from 'pg';
import { expect } from 'vitest';
import { storeNames, type StoreNamesOptions } from '../../../src/db/identifiers.js';
import { heldLeaseCondition, leaseNamespace } from '../../../src/ownership/leases.js';
import { sleep } from '../../../src/shared/time.js';
import { startDaemon } from '../child-runner.js';
import { waitFor, type TestDatabase } from '../database.js';
import { expectExactlyOnceInOrder, waitUntilAllApplied } from '../position-log.js';

/**
 * Several instances on a foreign source, as the chaos suite runs them on the native one: daemon processes (`run`,
 * the fixture projections chaos_a and chaos_b of test/fixtures/projections, position logs) sharing the projections
 * through PostgreSQL, the store's own writers writing concurrently (some rolled back, one transaction held open past
 * the gap timeout), the owner of a projection SIGKILLed mid-run and a new instance joining. The invariant is the
 * chaos suite's: every committed event applied exactly once by every projection, in global order except those
 * flagged late, and the held one flagged late.
 */

/** The projections every daemon runs (test/fixtures/projections). */
export const DAEMON_LOGS = ['chaos_a', 'chaos_b'];

/** A foreign store as the scenario writes and reads it. */
export interface ForeignStore {
  /** The source's settings, as StoreNamesOptions (lease names) and, through daemonFlags, the daemons' flags. */
  source: StoreNamesOptions;
  /** A writer session (message-db's needs its search_path). */
  connect(): Promise<pg.Client>;
  /** Writes one event to `stream` in the open transaction of `client` with the store's own writer; its position. */
  write(client: pg.Client, stream: string, n: number): Promise<number>;
  /** Every committed position of the store, in order. */
  committed(): Promise<number[]>;
}

/** `{ source: 'custom', eventsTable: 'app.ledger', columnPosition: 'id' }` → `--source custom --events-table …`. */
export function daemonFlags(source: StoreNamesOptions): string[] {
  return Object.entries(source).flatMap(([key, value]) => {
    const flag = `--${key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;
    if (typeof value === 'boolean') return value ? [flag] : [];
    return value === undefined ? [] : [flag, String(value)];
  });
}

/** The owner (pid) of each projection whose lease is held right now, per PostgreSQL. */
async function owners(db: TestDatabase, source: StoreNamesOptions): Promise<Map<string, number>> {
  const { rows } = await db.pool.query<{ name: string; owner: string }>(
    `SELECT c.name, c.owner FROM projection_checkpoints c
      WHERE EXISTS (SELECT 1 FROM pg_locks k WHERE ${heldLeaseCondition('k', '$1', 'c.name')})`,
    [leaseNamespace(storeNames(source), 'projection')],
  );
  return new Map(rows.map((r) => [r.name, Number(r.owner.split('/')[1])]));
}

export interface SharedInstancesSummary {
  committed: number;
  rollbacks: number;
  late: number;
  held: number;
}

const GAP_TIMEOUT = '1500ms';
const WRITERS = 5;

/**
 * The scenario (about 20 s on 2 cores):
 * 1. two daemons start together (both attach to the foreign table) and share the two projections, one each;
 * 2. a transaction writes one event and stays open; WRITERS writer sessions write in transactions of one or two
 *    events, one in six rolled back;
 * 3. the owner of chaos_a is SIGKILLed: the survivor takes both over; a third daemon joins and takes one back;
 * 4. once the held position's gap has timed out and both projections have passed it, it commits (late);
 * 5. the writers write some more and stop; every committed event is applied exactly once by both projections, in
 *    global order but the late ones, and the held one is late in both.
 */
export async function expectExactlyOnceAcrossInstances(db: TestDatabase, store: ForeignStore): Promise<SharedInstancesSummary> {
  const args = [
    ...daemonFlags(store.source),
    '--gap-timeout',
    GAP_TIMEOUT,
    '--gap-evidence',
    'auto',
    '--batch-size',
    '20',
    '--poll-interval',
    '250ms',
  ];
  const daemons: Array<ReturnType<typeof startDaemon>> = [];
  const spawn = () => {
    const daemon = startDaemon(db.url, args);
    daemons.push(daemon);
    return daemon;
  };
  const alive = () => daemons.filter((d) => d.child.exitCode === null && d.child.signalCode === null);
  const output = () => daemons.map((d) => `--- daemon ${d.child.pid}:\n${d.output.join('').slice(-3_000)}`).join('\n');
  const balanced = async () => {
    const owned = await owners(db, store.source);
    const pids = new Set(owned.values());
    return owned.size === DAEMON_LOGS.length && pids.size === 2 && alive().every((d) => pids.has(d.child.pid!));
  };

  const writing = new AbortController();
  const stats = { commits: 0, rollbacks: 0 };
  const writer = async (w: number) => {
    const client = await store.connect();
    try {
      for (let i = 0; !writing.signal.aborted; i++) {
        await client.query('BEGIN');
        await store.write(client, `w${w}-${i % 4}`, i);
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
      await client.end();
    }
  };
  let writers: Array<Promise<void>> = [];
  const held = await store.connect();
  try {
    spawn();
    spawn();
    await waitFor('two instances sharing the projections', balanced, 45_000).catch((e: Error) => {
      throw new Error(`${e.message}\n${output()}`);
    });

    await held.query('BEGIN');
    const heldPosition = await store.write(held, 'held-1', 0);
    writers = Array.from({ length: WRITERS }, (_, w) => writer(w));
    await waitFor('writers under way', () => stats.commits >= 60);

    const victimPid = (await owners(db, store.source)).get('chaos_a')!;
    const victim = daemons.find((d) => d.child.pid === victimPid)!;
    const survivor = alive().find((d) => d !== victim)!;
    victim.child.kill('SIGKILL');
    await victim.exited;
    await waitFor(
      'the survivor owns both',
      async () => {
        const owned = await owners(db, store.source);
        return owned.size === DAEMON_LOGS.length && [...owned.values()].every((pid) => pid === survivor.child.pid);
      },
      30_000,
    );
    spawn();
    await waitFor('the new instance took its share', balanced, 45_000);

    await waitFor(
      `the held position ${heldPosition} given up and passed by both projections`,
      async () => {
        const { rows } = await db.pool.query<{ timed_out: boolean; passed: boolean }>(
          `SELECT EXISTS (SELECT 1 FROM projection_gaps
                           WHERE resolution = 'timed_out' AND $1 BETWEEN from_position AND to_position) AS timed_out,
                  (SELECT count(*) FROM projection_checkpoints WHERE name = ANY($2) AND position > $1) = $3 AS passed`,
          [heldPosition, DAEMON_LOGS, DAEMON_LOGS.length],
        );
        return rows[0]!.timed_out && rows[0]!.passed;
      },
      30_000,
    );
    await held.query('COMMIT');
    const before = stats.commits;
    await waitFor('more writes after the late commit', () => stats.commits >= before + 30);
    writing.abort();
    await Promise.all(writers);

    const committed = await store.committed();
    expect(committed).toContain(heldPosition);
    await waitUntilAllApplied(db.pool, committed, DAEMON_LOGS, 30_000).catch((e: Error) => {
      throw new Error(`${e.message}\n${output()}`);
    });
    let late = 0;
    for (const name of DAEMON_LOGS) {
      const log = await expectExactlyOnceInOrder(db.pool, name, committed);
      expect(log.find((r) => r.position === heldPosition)).toEqual({ position: heldPosition, applied: 1, late: true });
      late = Math.max(late, log.filter((r) => r.late).length);
    }
    expect(stats.rollbacks).toBeGreaterThan(0);
    return { committed: committed.length, rollbacks: stats.rollbacks, late, held: heldPosition };
  } finally {
    writing.abort();
    await Promise.allSettled(writers);
    await held.end().catch(() => {});
    for (const d of daemons) d.child.kill('SIGKILL');
    await Promise.all(daemons.map((d) => d.exited));
  }
}
