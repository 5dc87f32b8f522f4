import { describe, expect, it } from 'vitest';
import type { EventStore, Runner } from '../../../src/index.js';
import { storeNames } from '../../../src/db/identifiers.js';
import { requestCommand } from '../../../src/projector/commands.js';
import { readReplay, requestReplay } from '../../../src/replay/requests.js';
import type { TestDatabase } from '../../support/database.js';
import { waitFor } from '../../support/database.js';
import { committedPositions, expectExactlyOnceInOrder, positionLog, waitUntilAllApplied } from '../../support/position-log.js';
import { startDaemon } from '../../support/child-runner.js';
import { startRunner, useRunnerFixture } from '../../support/runner.js';

/**
 * The shared reader under the four changes of a group the issue names: a member fails, one is replayed, one is added,
 * some move to another instance. Every projection still applies every committed event exactly once, in order; and
 * the group really shares its reads (fewer reads of the event table than batches committed).
 */
const t = useRunnerFixture();
const names = storeNames();
const options = { gapTimeoutMs: 500, batchSize: 40, pollIntervalMs: 100 };

/** `writers` sessions appending 1–3 events at a time, one append in ten rolled back (a gap that dies). */
async function writeConcurrently(db: TestDatabase, store: EventStore, appends: number, writers = 4): Promise<void> {
  await Promise.all(
    Array.from({ length: writers }, async (_, w) => {
      for (let i = 0; i < appends; i++) {
        const events = Array.from({ length: 1 + (i % 3) }, () => ({ type: 'E', data: { w, i } }));
        if (i % 10 !== 7) {
          await store.append(`s-${w}-${i % 5}`, events);
          continue;
        }
        const client = await db.connect();
        await client.query('BEGIN');
        await store.append(`s-${w}-${i % 5}`, events, { client });
        await client.query('ROLLBACK');
        await client.end();
      }
    }),
  );
}

async function counterTotal(runner: Runner, metric: 'eventReads'): Promise<number> {
  return (await runner.metrics[metric].get()).values.reduce((sum, v) => sum + v.value, 0);
}

async function batchesCommitted(runner: Runner): Promise<number> {
  const { values } = await runner.metrics.batchDuration.get();
  return values.filter((v) => v.metricName?.endsWith('_count')).reduce((sum, v) => sum + v.value, 0);
}

async function expectAllExactlyOnce(projections: string[]): Promise<void> {
  const committed = await committedPositions(t.db.pool);
  await waitUntilAllApplied(t.db.pool, committed, projections, 30_000);
  for (const name of projections) await expectExactlyOnceInOrder(t.db.pool, name, committed);
}

describe('one read for many projections', () => {
  it('a member that fails leaves the group, the others go on sharing reads; retried, it catches up exactly once', async () => {
    let broken = true;
    // At the first event from 100 on: position 100 itself may be one of the appends the writers roll back.
    const fragile = positionLog('c', { failAt: (e) => broken && e.globalPosition >= 100n });
    t.runner = await startRunner(t.db, { ...options, projections: [positionLog('a'), positionLog('b'), fragile], handlerRetries: 0 });
    await writeConcurrently(t.db, t.store, 60);
    await waitFor('c failed at its first event from 100 on', () => t.runner!.failedProjections().includes('c'));
    await waitFor('a and b at the head', async () => {
      const { rows } = await t.db.pool.query(
        `SELECT count(*)::int AS n FROM projection_checkpoints WHERE name IN ('a', 'b') AND position = (SELECT max(global_position) FROM events)`,
      );
      return rows[0].n === 2;
    });
    broken = false;
    await requestCommand(t.db.pool, names, { projection: 'c', command: 'retry', requestedBy: 'test' });
    await expectAllExactlyOnce(['a', 'b', 'c']);
  });

  it('projections catching up from the same place read each page once between them', async () => {
    await writeConcurrently(t.db, t.store, 100);
    const four = ['a', 'b', 'c', 'd'];
    t.runner = await startRunner(t.db, { ...options, projections: four.map((n) => positionLog(n)) });
    await expectAllExactlyOnce(four);
    const reads = await counterTotal(t.runner, 'eventReads');
    const batches = await batchesCommitted(t.runner);
    // Four projections at the same place: ideally a quarter of the batches read; a member that drifts a page apart
    // costs a read.
    expect(reads).toBeGreaterThan(0);
    expect(reads).toBeLessThan(batches);
  });

  it('caught-up projections share the read of each live wake-up, and apply every event exactly once', async () => {
    const four = ['a', 'b', 'c', 'd'];
    t.runner = await startRunner(t.db, { ...options, projections: four.map((n) => positionLog(n)) });
    await t.store.append('warm-up', [{ type: 'E', data: {} }]);
    await expectAllExactlyOnce(four);
    const reads = await counterTotal(t.runner, 'eventReads');
    const batches = await batchesCommitted(t.runner);
    // One append at a time, each its own wake-up (H moves by one step): the first batch that needs the new stretch
    // reads it, the other three take it from the page (each batch reading on its own made it four reads).
    for (let i = 0; i < 30; i++) {
      await t.store.append(`live-${i % 3}`, [{ type: 'E', data: { i } }]);
      await new Promise((resolve) => setTimeout(resolve, 15));
    }
    await expectAllExactlyOnce(four);
    const liveReads = (await counterTotal(t.runner, 'eventReads')) - reads;
    const liveBatches = (await batchesCommitted(t.runner)) - batches;
    expect(liveBatches).toBeGreaterThanOrEqual(30);
    expect(liveReads).toBeGreaterThan(0);
    expect(liveReads).toBeLessThan(liveBatches / 2);
  });

  it('a replayed member rebuilds on its own reads while the others stay live, and all end exactly once', async () => {
    t.runner = await startRunner(t.db, { ...options, projections: [positionLog('a'), positionLog('b')] });
    await writeConcurrently(t.db, t.store, 40);
    const replay = await requestReplay(t.db.pool, names, 'b', 'test');
    await writeConcurrently(t.db, t.store, 40);
    await waitFor('replay done', async () => (await readReplay(t.db.pool, names, replay)).status === 'done', 30_000);
    await expectAllExactlyOnce(['a', 'b']);
  });

  it('a projection added by a new deployment catches up from 0 and joins, while writes go on', async () => {
    t.runner = await startRunner(t.db, { ...options, projections: [positionLog('a'), positionLog('b')] });
    await writeConcurrently(t.db, t.store, 40);
    await t.runner.stop();
    const writing = writeConcurrently(t.db, t.store, 60);
    t.runner = await startRunner(t.db, { ...options, projections: [positionLog('a'), positionLog('b'), positionLog('d')] });
    await writing;
    await expectAllExactlyOnce(['a', 'b', 'd']);
  });

  it('members moving to another instance and back: exactly once on both sides of every move', async () => {
    // The other instance is a daemon process (instances are told apart by host/pid); it runs the fixture projections
    // chaos_a and chaos_b, which this runner runs too.
    const projections = [positionLog('chaos_a'), positionLog('chaos_b')];
    t.runner = await startRunner(t.db, { ...options, projections });
    const writing = writeConcurrently(t.db, t.store, 80);
    const other = startDaemon(t.db.url, ['--batch-size', '40', '--gap-timeout', '500ms', '--gap-evidence', 'off']);
    try {
      await waitFor(
        'one projection moved to the other instance',
        async () =>
          t.runner!.ownedProjections().length === 1 &&
          (await t.db.pool.query(`SELECT count(DISTINCT owner)::int AS n FROM projection_checkpoints`)).rows[0].n === 2,
        30_000,
      );
      other.child.kill('SIGTERM');
      expect(await other.exited).toBe(0);
      await waitFor('both back here', () => t.runner!.ownedProjections().length === 2, 30_000);
      await writing;
      await expectAllExactlyOnce(['chaos_a', 'chaos_b']);
    } finally {
      other.child.kill('SIGKILL');
      await writing.catch(() => {});
    }
  });

  it('a late event missing from a page read before it committed reaches the projection that uses the page later', async () => {
    // Events 1..20 with position 10 held open past the gap timeout. `fast` reads every page while 10 is missing; `slow`
    // fails once on event 2 (after 10 committed late and its notice exists), so its retried first batch sees the
    // notice while its checkpoint is still below 10, and its second batch gets the page without 10 from the reader.
    // Marking the notice seen in the first batch ("the normal read will bring it") lost event 10 for `slow`.
    let gate: () => void = () => {};
    const opened = new Promise<void>((resolve) => (gate = resolve));
    let failedOnce = false;
    const slow = positionLog('slow');
    const slowHandle = slow.handle!.bind(slow);
    slow.handle = async (event, tx) => {
      if (event.globalPosition === 2n && !failedOnce) {
        await opened;
        failedOnce = true;
        throw new Error('once');
      }
      await slowHandle(event, tx);
    };
    for (let i = 1; i <= 9; i++) await t.store.append(`s-${i}`, [{ type: 'E', data: {} }]);
    const held = await t.db.connect();
    await held.query('BEGIN');
    const late = await t.store.append('held', [{ type: 'E', data: {} }], { client: held });
    expect(late.firstPosition).toBe(10n);
    for (let i = 11; i <= 20; i++) await t.store.append(`s-${i}`, [{ type: 'E', data: {} }]);
    t.runner = await startRunner(t.db, {
      ...options,
      gapTimeoutMs: 300,
      // Batches of 2: every read but the last of each is more than a batch behind H, so through the shared reader.
      batchSize: 2,
      handlerRetries: 1,
      projections: [positionLog('fast'), slow],
    });
    await waitFor(
      'fast at 20 without 10',
      async () => (await t.db.pool.query(`SELECT position FROM projection_checkpoints WHERE name = 'fast'`)).rows[0]?.position === '20',
    );
    await held.query('COMMIT');
    await waitFor(
      'late notice for 10',
      async () =>
        (await t.db.pool.query(`SELECT 1 FROM projection_gaps WHERE resolution = 'late' AND from_position = 10`)).rows.length === 1,
    );
    gate();
    await expectAllExactlyOnce(['fast', 'slow']);
    // fast passed 10 before it committed: late. slow gets it once either way: late from a page read before the
    // commit (the case this guards: the old rule lost it), or in order from a page read after.
    const { rows } = await t.db.pool.query(`SELECT late FROM log_fast WHERE position = 10`);
    expect(rows).toEqual([{ late: true }]);
  });
});
