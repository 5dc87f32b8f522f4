import { describe, expect, it } from 'vitest';
import { waitFor } from '../../support/database.js';
import { positionLog, readLog } from '../../support/position-log.js';
import { startRunner, useRunnerFixture } from '../../support/runner.js';
import { waitForTrackerPasses } from '../../support/tracker-passes.js';

const t = useRunnerFixture();
/** Tracker passes a negative check waits for: with a gap open, every pass collects evidence and could declare it dead. */
const EVIDENCE_CHANCES = 20;

const gapRows = async () =>
  (await t.db.pool.query('SELECT from_position::int AS f, to_position::int AS t, resolution FROM projection_gaps ORDER BY id')).rows;
const openGaps = async () => (await gapRows()).filter((g) => g.resolution === null);
const withEvidence = (gapTimeoutMs = 60_000) => startRunner(t.db, { projections: [positionLog('log')], gapEvidence: 'auto', gapTimeoutMs });

/** Opens a transaction that takes the next position and keeps it open. */
async function holdPosition(stream = 'held') {
  const client = await t.db.connect();
  await client.query('BEGIN');
  const result = await t.store.append(stream, [{ type: 'E', data: {} }], { client });
  return { client, position: Number(result.firstPosition) };
}

/** Commits a position above the held one so that the held one is a gap, and waits until the t.runner has seen it. */
async function makeGapVisible() {
  await t.store.append('above', [{ type: 'E', data: {} }]);
  await waitFor('gap seen', async () => (await gapRows()).length > 0);
}

describe('dead gaps by evidence', () => {
  it('declares a rolled-back position dead long before the timeout, while others keep appending', async () => {
    t.runner = await withEvidence();
    const held = await holdPosition();
    await makeGapVisible();
    const writing = (async () => {
      for (let i = 0; i < 20; i++) await t.store.append(`busy-${i}`, [{ type: 'E', data: {} }]);
    })();
    await held.client.query('ROLLBACK');
    await waitFor('dead', async () => (await gapRows()).some((g) => g.resolution === 'dead'), 5_000);
    await writing;
    expect((await gapRows()).filter((g) => g.f === held.position)).toEqual([{ f: held.position, t: held.position, resolution: 'dead' }]);
    await waitFor('all applied', async () => (await readLog(t.db.pool, 'log')).length === 21);
  });

  it('commit: filled, never dead while open', async () => {
    t.runner = await withEvidence();
    const held = await holdPosition();
    await makeGapVisible();
    // Give evidence many chances to be wrong: every tracker pass re-checks it while the gap is open.
    await waitForTrackerPasses(t.runner, EVIDENCE_CHANCES);
    expect(await openGaps()).toHaveLength(1);
    await held.client.query('COMMIT');
    await waitFor('filled', async () => (await gapRows()).some((g) => g.resolution === 'filled'));
    expect((await gapRows()).map((g) => g.resolution)).toEqual(['filled']);
  });

  it('held open past the timeout: timed_out, then late on commit', async () => {
    t.runner = await withEvidence(800);
    const held = await holdPosition();
    await makeGapVisible();
    await waitFor('timed out', async () => (await gapRows()).some((g) => g.resolution === 'timed_out'), 10_000);
    // Commit only once the projection has passed the position: one that gets there later reads it in order.
    await waitFor('passed the gap', async () => (await readLog(t.db.pool, 'log')).some((r) => r.position === held.position + 1));
    await held.client.query('COMMIT');
    await waitFor('late', async () => (await gapRows()).some((g) => g.resolution === 'late'));
    await waitFor('applied late', async () => (await readLog(t.db.pool, 'log')).some((r) => r.late && r.position === held.position));
  });

  it('an unrelated session idle in transaction since before the gap does not delay a dead gap', async () => {
    t.runner = await withEvidence();
    const idle = await t.db.connect();
    await idle.query('BEGIN');
    await idle.query('SELECT count(*) FROM events');
    // The sequence must be sampled after the idle session went quiet: any pass of the tracker does that.
    await t.store.append('before', [{ type: 'E', data: {} }]);
    await waitFor('sampled', async () => t.runner!.positions.highWater >= 1n);
    const held = await holdPosition();
    await makeGapVisible();
    await held.client.query('ROLLBACK');
    await waitFor('dead', async () => (await gapRows()).some((g) => g.resolution === 'dead'), 5_000);
    await idle.query('ROLLBACK');
  });

  it('a session that began before the gap and is still running a write holds it', async () => {
    t.runner = await withEvidence();
    const writer = await t.db.connect();
    await writer.query('BEGIN');
    await writer.query('SELECT 1');
    const held = await holdPosition();
    // The long write starts now and is busy for 5 s: it began before the gap, so it could be the gap's writer.
    const longWrite = writer.query(
      `INSERT INTO events (stream_name, stream_position, type, data) SELECT 'long', 1, 'E', '{}' FROM pg_sleep(5)`,
    );
    let longWriteEnded = false;
    void longWrite.then(
      () => (longWriteEnded = true),
      () => (longWriteEnded = true),
    );
    await makeGapVisible();
    await held.client.query('ROLLBACK');
    // Many evidence passes while the long write is still busy: none may declare the gap dead.
    await waitForTrackerPasses(t.runner, EVIDENCE_CHANCES);
    expect(longWriteEnded, 'the long write ended before the passes: nothing was proven while it was busy').toBe(false);
    expect(await openGaps()).toHaveLength(1);
    await longWrite;
    await writer.query('COMMIT');
    await waitFor('dead once the long write ended', async () => (await gapRows()).some((g) => g.resolution === 'dead'), 5_000);
  });

  it.each([
    ['COMMIT PREPARED', 'filled'],
    ['ROLLBACK PREPARED', 'dead'],
  ])('a two-phase transaction holding the position: held until %s (%s)', async (finish, resolution) => {
    t.runner = await withEvidence();
    // PostgreSQL cannot PREPARE a transaction that sent a NOTIFY: the writer opts out of the insert trigger's NOTIFY
    // for this transaction (the runner finds the event by polling), and inserts plainly.
    const client = await t.db.connect();
    await client.query('BEGIN');
    await client.query(`SET LOCAL projection_runner.notify = 'off'`);
    await client.query(`INSERT INTO events (stream_name, stream_position, type, data) VALUES ('two-phase', 1, 'E', '{}')`);
    const gid = `gid_${Math.random().toString(36).slice(2)}`;
    await client.query(`PREPARE TRANSACTION '${gid}'`);
    await makeGapVisible();
    await waitForTrackerPasses(t.runner, EVIDENCE_CHANCES);
    expect(await openGaps()).toHaveLength(1);
    await t.db.pool.query(`${finish} '${gid}'`);
    await waitFor(resolution, async () => (await gapRows()).some((g) => g.resolution === resolution), 5_000);
  });
});
