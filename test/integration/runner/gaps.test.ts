import { describe, expect, it } from 'vitest';
import { waitFor } from '../../support/database.js';
import { committedPositions, positionLog, readLog } from '../../support/position-log.js';
import { startRunner, useRunnerFixture } from '../../support/runner.js';

const t = useRunnerFixture();

const positions = async (name = 'log') => (await readLog(t.db.pool, name)).map((r) => r.position);
const gapRows = async () =>
  (await t.db.pool.query('SELECT from_position::int AS f, to_position::int AS t, resolution FROM projection_gaps ORDER BY id')).rows;

describe('the checkpoint never passes a gap', () => {
  it('holds at a position whose transaction is open, then applies the filler first', async () => {
    await t.store.append('s-0', [{ type: 'E', data: {} }]);
    t.runner = await startRunner(t.db, { projections: [positionLog('log')] });
    await waitFor('first event applied', async () => (await positions()).length === 1);

    const slow = await t.db.connect();
    await slow.query('BEGIN');
    const held = await t.store.append('s-slow', [{ type: 'E', data: {} }], { client: slow });
    const after = await t.store.append('s-fast', [{ type: 'E', data: {} }]);
    expect(after.firstPosition).toBe(held.lastPosition + 1n);

    // The t.runner has seen the gap (it is persisted) and still applied nothing past it.
    await waitFor('gap recorded', async () => (await gapRows()).some((g) => g.resolution === null));
    expect(await positions()).toEqual([1]);

    await slow.query('COMMIT');
    await waitFor('both applied', async () => (await positions()).length === 3);
    expect(await positions()).toEqual([1, Number(held.lastPosition), Number(after.lastPosition)]);
    expect(await gapRows()).toEqual([{ f: 2, t: 2, resolution: 'filled' }]);
  });

  it('declares a rolled-back position dead by timeout, with nothing else happening', async () => {
    t.runner = await startRunner(t.db, { projections: [positionLog('log')], gapTimeoutMs: 700, pollIntervalMs: 60_000 });
    const client = await t.db.connect();
    await client.query('BEGIN');
    await t.store.append('rolled', [{ type: 'E', data: {} }], { client });
    await t.store.append('kept', [{ type: 'E', data: {} }]);
    await waitFor('gap seen', async () => (await gapRows()).length > 0);
    await client.query('ROLLBACK');
    // No further appends, no notifications, a 60 s poll: only the tracker's own deadline can fire.
    await waitFor('event above the gap applied', async () => (await positions()).includes(2), 10_000);
    expect(await gapRows()).toEqual([{ f: 1, t: 1, resolution: 'timed_out' }]);
    expect(await positions()).toEqual([2]);
  });

  it('delivers an event that commits after its gap was declared dead, flagged late, exactly once', async () => {
    t.runner = await startRunner(t.db, { projections: [positionLog('log')], gapTimeoutMs: 500 });
    const slow = await t.db.connect();
    await slow.query('BEGIN');
    const held = await t.store.append('late-stream', [{ type: 'E', data: {} }], { client: slow });
    await t.store.append('other', [{ type: 'E', data: {} }]);
    await waitFor('passed the gap', async () => (await positions()).includes(2), 10_000);
    await slow.query('COMMIT');
    await waitFor('late event applied', async () => (await readLog(t.db.pool, 'log')).some((r) => r.late));
    const log = await readLog(t.db.pool, 'log');
    expect(log).toEqual([
      { position: 2, applied: 1, late: false },
      { position: Number(held.firstPosition), applied: 1, late: true },
    ]);
    expect((await gapRows()).map((g) => g.resolution)).toEqual(['timed_out', 'late']);
  });

  it('does not treat rolled-back positions at the top of the log as gaps', async () => {
    t.runner = await startRunner(t.db, { projections: [positionLog('log')] });
    await t.store.append('a', [{ type: 'E', data: {} }]);
    const client = await t.db.connect();
    await client.query('BEGIN');
    await t.store.append(
      'b',
      [
        { type: 'E', data: {} },
        { type: 'E', data: {} },
      ],
      { client },
    );
    await client.query('ROLLBACK');
    await waitFor('applied', async () => (await positions()).length === 1);
    await waitFor('lag zero', async () => t.runner!.positions.highWater === 1n && t.runner!.ownedProjections()[0]!.checkpoint === 1n);
    const snapshot = await t.runner.lagSnapshot();
    expect(snapshot.head).toBe(1n);
    expect(snapshot.projections[0]).toMatchObject({ checkpoint: 1n, oldestUnappliedAgeSeconds: 0 });
    expect(await gapRows()).toEqual([]);
  });
});

describe('restart and replay over historical gaps', () => {
  it('never waits again on gaps below the persisted high-water mark', async () => {
    // 300 rolled-back appends interleaved with committed ones: 300 historical gaps.
    const writer = await t.db.connect();
    for (let i = 0; i < 300; i++) {
      await t.store.append(`h-${i}`, [{ type: 'E', data: { i } }]);
      await writer.query('BEGIN');
      await t.store.append(`rb-${i}`, [{ type: 'E', data: {} }], { client: writer });
      await writer.query('ROLLBACK');
    }
    await t.store.append('last', [{ type: 'E', data: {} }]);
    // Timeout-only and short, for the first pass that has to find out.
    t.runner = await startRunner(t.db, { projections: [positionLog('log')], gapTimeoutMs: 300 });
    await waitFor('all applied', async () => (await positions()).length === 301, 20_000);
    await t.runner.stop();

    // Restart with a gap timeout of an hour: anything re-detected would hang the test.
    await t.db.pool.query('TRUNCATE log_log; UPDATE projection_checkpoints SET position = 0');
    t.runner = await startRunner(t.db, { projections: [positionLog('log')], gapTimeoutMs: 3_600_000 });
    await waitFor('replayed everything', async () => (await positions()).length === 301, 20_000);
    expect(await positions()).toEqual(await committedPositions(t.db.pool));
    const { rows } = await t.db.pool.query("SELECT count(*)::int AS n FROM projection_gaps WHERE resolution = 'timed_out'");
    expect(rows[0].n).toBe(300);
  });
});
