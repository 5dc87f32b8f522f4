import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../../support/database.js';
import { DAEMON_LOGS, expectExactlyOnceAcrossInstances } from '../../support/foreign/instances.js';
import { installMessageDb, messageDbStore } from '../../support/foreign/message-db.js';
import { expectRebuiltExactlyOnce, lastApplication, replayRequests, replayWithCli } from '../../support/foreign/replay.js';
import { holdOneOpen, startWriters } from '../../support/foreign/workload.js';
import { expectExactlyOnceInOrder, positionLog, waitUntilAllApplied } from '../../support/position-log.js';
import { startRunner } from '../../support/runner.js';

/**
 * Replay and several instances on the real message-db (its install.sh), written by message_store.write_message: the
 * guarantees of the native source hold unchanged.
 */
let db: TestDatabase;
beforeEach(async () => {
  db = await createTestDatabase({ migrated: false });
  await installMessageDb(db.url);
}, 120_000);
afterEach(() => db.drop());

const messageDb = () => messageDbStore(db);

describe('--source message-db: replay and several instances', () => {
  it('replay NAME rebuilds the projection exactly once, its late event included, while writers write; the other projection is untouched', async () => {
    const store = messageDb();
    const runner = await startRunner(db, {
      ...store.source,
      projections: DAEMON_LOGS.map((name) => positionLog(name)),
      gapEvidence: 'auto',
      gapTimeoutMs: 1_500,
      batchSize: 20,
    });
    try {
      // Before the replay: concurrent writers (some rolled back) and one message committed after its gap timed out.
      const held = await holdOneOpen(store);
      const writers = startWriters(store, 4);
      try {
        await writers.committedMore(40);
        await held.commitLate(db, DAEMON_LOGS);
        await writers.committedMore(20);
      } finally {
        await writers.stop();
        await held.end();
      }
      const built = await store.committed();
      await waitUntilAllApplied(db.pool, built, DAEMON_LOGS, 30_000);
      const first = await expectExactlyOnceInOrder(db.pool, 'chaos_a', built);
      expect(first.find((r) => r.position === held.position)).toEqual({ position: held.position, applied: 1, late: true });
      const lastBefore = await lastApplication(db, 'chaos_a');
      const chaosB = await lastApplication(db, 'chaos_b');

      // The replay as an operator runs it: this process's runner owns chaos_a and rebuilds it; writers go on meanwhile.
      const during = startWriters(store, 2);
      let result;
      try {
        result = await replayWithCli(db, 'chaos_a', store.source);
        await during.committedMore(5);
      } finally {
        await during.stop();
      }
      expect(result.code, result.stderr).toBe(0);
      expect(result.stderr).toMatch(/chaos_a is run by .*: the daemon rebuilds it/);
      expect(result.stdout).toMatch(/replayed chaos_a: \d+ events/);

      const committed = await store.committed();
      await waitUntilAllApplied(db.pool, committed, DAEMON_LOGS, 30_000);
      await expectRebuiltExactlyOnce(db, 'chaos_a', committed, lastBefore);
      // chaos_b was never reset: its rows from before the replay are still the ones it applied then.
      const logB = await expectExactlyOnceInOrder(db.pool, 'chaos_b', committed);
      const { rows } = await db.pool.query<{ n: number }>('SELECT count(*)::int AS n FROM log_chaos_b WHERE seq <= $1', [chaosB]);
      expect(rows[0]!.n).toBe(built.length);
      expect(logB.find((r) => r.position === held.position)?.late).toBe(true);
      const [request, ...more] = await replayRequests(db, 'chaos_a');
      expect(more).toEqual([]);
      expect(request!.status).toBe('done');
      expect(request!.target).toBeGreaterThanOrEqual(built.at(-1)!);
    } finally {
      await runner.stop();
    }
  });

  it('two daemons share the projections while write_message writers write (rollbacks, one held past the gap timeout); the owner of one is SIGKILLed and a third joins: every message exactly once', async () => {
    const summary = await expectExactlyOnceAcrossInstances(db, messageDb());
    console.info(`message-db, several instances: ${JSON.stringify(summary)}`);
  }, 90_000);
});
