import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { EventStore, type Runner } from '../../../src/index.js';
import { createTestDatabase, waitFor, type TestDatabase } from '../../support/database.js';
import { committedPositions, positionLog, readLog } from '../../support/position-log.js';
import { startRunner } from '../../support/runner.js';

let db: TestDatabase;
let store: EventStore;
let runner: Runner | undefined;

beforeEach(async () => {
  db = await createTestDatabase();
  store = new EventStore(db.pool);
});
afterEach(async () => {
  await runner?.stop();
  runner = undefined;
  await db.drop();
});

const positions = async (name = 'log') => (await readLog(db.pool, name)).map((r) => r.position);
const gapRows = async () =>
  (await db.pool.query('SELECT from_position::int AS f, to_position::int AS t, resolution FROM projection_gaps ORDER BY id')).rows;

describe('the checkpoint never passes a gap', () => {
  it('holds at a position whose transaction is open, then applies the filler first', async () => {
    await store.append('s-0', [{ type: 'E', data: {} }]);
    runner = await startRunner(db, { projections: [positionLog('log')] });
    await waitFor('first event applied', async () => (await positions()).length === 1);

    const slow = await db.connect();
    await slow.query('BEGIN');
    const held = await store.append('s-slow', [{ type: 'E', data: {} }], { client: slow });
    const after = await store.append('s-fast', [{ type: 'E', data: {} }]);
    expect(after.firstPosition).toBe(held.lastPosition + 1n);

    // The runner has seen the gap (it is persisted) and still applied nothing past it.
    await waitFor('gap recorded', async () => (await gapRows()).some((g) => g.resolution === null));
    expect(await positions()).toEqual([1]);

    await slow.query('COMMIT');
    await waitFor('both applied', async () => (await positions()).length === 3);
    expect(await positions()).toEqual([1, Number(held.lastPosition), Number(after.lastPosition)]);
    expect(await gapRows()).toEqual([{ f: 2, t: 2, resolution: 'filled' }]);
  });

  it('declares a rolled-back position dead by timeout, with nothing else happening', async () => {
    runner = await startRunner(db, { projections: [positionLog('log')], gapTimeoutMs: 700, pollIntervalMs: 60_000 });
    const client = await db.connect();
    await client.query('BEGIN');
    await store.append('rolled', [{ type: 'E', data: {} }], { client });
    await store.append('kept', [{ type: 'E', data: {} }]);
    await waitFor('gap seen', async () => (await gapRows()).length > 0);
    await client.query('ROLLBACK');
    // No further appends, no notifications, a 60 s poll: only the tracker's own deadline can fire.
    await waitFor('event above the gap applied', async () => (await positions()).includes(2), 10_000);
    expect(await gapRows()).toEqual([{ f: 1, t: 1, resolution: 'timed_out' }]);
    expect(await positions()).toEqual([2]);
  });

  it('delivers an event that commits after its gap was declared dead, flagged late, exactly once', async () => {
    runner = await startRunner(db, { projections: [positionLog('log')], gapTimeoutMs: 500 });
    const slow = await db.connect();
    await slow.query('BEGIN');
    const held = await store.append('late-stream', [{ type: 'E', data: {} }], { client: slow });
    await store.append('other', [{ type: 'E', data: {} }]);
    await waitFor('passed the gap', async () => (await positions()).includes(2), 10_000);
    await slow.query('COMMIT');
    await waitFor('late event applied', async () => (await readLog(db.pool, 'log')).some((r) => r.late));
    const log = await readLog(db.pool, 'log');
    expect(log).toEqual([
      { position: 2, applied: 1, late: false },
      { position: Number(held.firstPosition), applied: 1, late: true },
    ]);
    expect((await gapRows()).map((g) => g.resolution)).toEqual(['timed_out', 'late']);
  });

  it('does not treat rolled-back positions at the top of the log as gaps', async () => {
    runner = await startRunner(db, { projections: [positionLog('log')] });
    await store.append('a', [{ type: 'E', data: {} }]);
    const client = await db.connect();
    await client.query('BEGIN');
    await store.append('b', [{ type: 'E', data: {} }, { type: 'E', data: {} }], { client });
    await client.query('ROLLBACK');
    await waitFor('applied', async () => (await positions()).length === 1);
    await waitFor('lag zero', async () => runner!.tracker.highWater === 1n && runner!.ownedProjections()[0]!.checkpoint === 1n);
    const snapshot = await runner.lagSnapshot();
    expect(snapshot.head).toBe(1n);
    expect(snapshot.projections[0]).toMatchObject({ checkpoint: 1n, oldestUnappliedAgeSeconds: 0 });
    expect(await gapRows()).toEqual([]);
  });
});

describe('restart and replay over historical gaps', () => {
  it('never waits again on gaps below the persisted high-water mark', async () => {
    // 300 rolled-back appends interleaved with committed ones: 300 historical gaps.
    const writer = await db.connect();
    for (let i = 0; i < 300; i++) {
      await store.append(`h-${i}`, [{ type: 'E', data: { i } }]);
      await writer.query('BEGIN');
      await store.append(`rb-${i}`, [{ type: 'E', data: {} }], { client: writer });
      await writer.query('ROLLBACK');
    }
    await store.append('last', [{ type: 'E', data: {} }]);
    // Timeout-only and short, for the first pass that has to find out.
    runner = await startRunner(db, { projections: [positionLog('log')], gapTimeoutMs: 300 });
    await waitFor('all applied', async () => (await positions()).length === 301, 20_000);
    await runner.stop();

    // Restart with a gap timeout of an hour: anything re-detected would hang the test.
    await db.pool.query('TRUNCATE log_log; UPDATE projection_checkpoints SET position = 0');
    runner = await startRunner(db, { projections: [positionLog('log')], gapTimeoutMs: 3_600_000 });
    await waitFor('replayed everything', async () => (await positions()).length === 301, 20_000);
    expect(await positions()).toEqual(await committedPositions(db.pool));
    const { rows } = await db.pool.query("SELECT count(*)::int AS n FROM projection_gaps WHERE resolution = 'timed_out'");
    expect(rows[0].n).toBe(300);
  });
});
