import { expect } from 'vitest';
import { storeNames, type StoreNamesOptions } from '../../../src/db/identifiers.js';
import { heldLeaseCondition, leaseNamespace } from '../../../src/ownership/leases.js';
import { startDaemon } from '../child-runner.js';
import { waitFor, type TestDatabase } from '../database.js';
import { expectExactlyOnceInOrder, waitUntilAllApplied } from '../position-log.js';
import { holdOneOpen, sourceFlags, startWriters, type ForeignStore, type HeldTransaction, type Writers } from './workload.js';

/**
 * Several instances on a foreign source, as the chaos suite runs them on the native one: daemon processes (`run`
 * with the fixture projections chaos_a and chaos_b of test/fixtures/projections, position logs) sharing the
 * projections through PostgreSQL while the store's own writers write, the owner of a projection SIGKILLed mid-run and
 * a new instance joining. The invariant is the chaos suite's: every committed event applied exactly once by every
 * projection, in global order except those flagged late, and the transaction held past the gap timeout late.
 */

/** The projections every daemon runs (test/fixtures/projections). */
export const DAEMON_LOGS = ['chaos_a', 'chaos_b'];

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
  /** The most events flagged late in one log. */
  late: number;
}

/**
 * The scenario (about 10 s on 2 cores):
 * 1. two daemons start together and share the projections, one each;
 * 2. a transaction writes one event and stays open; 5 writer sessions write (workload.ts startWriters: rollbacks,
 *    savepoints);
 * 3. the owner of chaos_a is SIGKILLed: the survivor takes both over; a third daemon joins and takes one back;
 * 4. once the held position's gap has timed out and both projections have passed it, it commits (late);
 * 5. the writers write some more and stop; every committed event is applied exactly once by both projections, in
 *    global order except the late ones, and the held one is late in both.
 */
export async function expectExactlyOnceAcrossInstances(db: TestDatabase, store: ForeignStore): Promise<SharedInstancesSummary> {
  const args = [
    ...sourceFlags(store.source),
    '--gap-timeout',
    '1500ms',
    '--gap-evidence',
    'auto',
    '--batch-size',
    '20',
    '--poll-interval',
    '250ms',
  ];
  const daemons: Array<ReturnType<typeof startDaemon>> = [];
  const spawn = () => daemons.push(startDaemon(db.url, args));
  const alive = () => daemons.filter((d) => d.child.exitCode === null && d.child.signalCode === null);
  const printOutput = () => console.error(daemons.map((d) => `--- daemon ${d.child.pid}:\n${d.output.join('').slice(-3_000)}`).join('\n'));
  const balanced = async () => {
    const owned = await owners(db, store.source);
    const pids = new Set(owned.values());
    return owned.size === DAEMON_LOGS.length && pids.size === 2 && alive().every((d) => pids.has(d.child.pid!));
  };

  let held: HeldTransaction | undefined;
  let writers: Writers | undefined;
  try {
    spawn();
    spawn();
    // (Writers start once the daemons have attached: the trigger's CREATE waits for the table's open transactions.)
    await waitFor('two instances sharing the projections', balanced, 45_000);
    const open = (held = await holdOneOpen(store));
    writers = startWriters(store, 5);
    await writers.committedMore(40);

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

    await open.commitLate(db, DAEMON_LOGS);
    await writers.committedMore(30);
    await writers.stop();

    const committed = await store.committed();
    expect(committed).toContain(open.position);
    await waitUntilAllApplied(db.pool, committed, DAEMON_LOGS, 30_000);
    let late = 0;
    for (const name of DAEMON_LOGS) {
      const log = await expectExactlyOnceInOrder(db.pool, name, committed);
      expect(log.find((r) => r.position === open.position)).toEqual({ position: open.position, applied: 1, late: true });
      late = Math.max(late, log.filter((r) => r.late).length);
    }
    expect(writers.rollbacks).toBeGreaterThan(0);
    return { committed: committed.length, rollbacks: writers.rollbacks, late };
  } catch (error) {
    printOutput();
    throw error;
  } finally {
    await writers?.stop().catch(() => {});
    await held?.end();
    for (const d of daemons) d.child.kill('SIGKILL');
    await Promise.all(daemons.map((d) => d.exited));
  }
}
