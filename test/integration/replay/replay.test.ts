import { pino } from 'pino';
import { afterAll, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { storeNames } from '../../../src/db/identifiers.js';
import { Replay } from '../../../src/replay/replay.js';
import { readReplay } from '../../../src/replay/requests.js';
import { createTestDatabase, type TestDatabase } from '../../support/database.js';

/**
 * The replay's state machine against the real request row: what `replay NAME` follows (applied, status, error) is
 * exactly what each committed batch reports through it.
 */
let db: TestDatabase;
const names = storeNames();
beforeAll(async () => {
  db = await createTestDatabase();
});
afterAll(() => db.drop());

let id: bigint;
beforeEach(async () => {
  await db.pool.query(`DELETE FROM projection_replays`);
  const { rows } = await db.pool.query(
    `INSERT INTO projection_replays (projection, status, target) VALUES ('p', 'running', 10) RETURNING id::text`,
  );
  id = BigInt(rows[0].id);
});

const replayOf = () => new Replay({ pool: db.pool, names, projection: 'p', log: pino({ level: 'silent' }) });
const row = async () => {
  const r = await readReplay(db.pool, names, id);
  return { status: r.status, applied: Number(r.applied), error: r.error };
};

describe('Replay, the one owner of a projection replay', () => {
  it('reports at most every 250 ms, and ends done when a committed checkpoint reaches the target', async () => {
    vi.useFakeTimers({ now: 1_000_000, toFake: ['Date'] });
    try {
      const replay = replayOf();
      replay.serve({ id, target: 10n });
      expect([replay.rebuilding, replay.target, replay.reachedBy(9n), replay.reachedBy(10n)]).toEqual([true, 10n, false, true]);
      await replay.recordBatch({ applied: 3, checkpoint: 3n, failed: false }); // the first batch: written at once
      expect(await row()).toEqual({ status: 'running', applied: 3, error: null });
      await replay.recordBatch({ applied: 2, checkpoint: 5n, failed: false }); // too soon: kept for later
      expect((await row()).applied).toBe(3);
      vi.advanceTimersByTime(250);
      await replay.recordBatch({ applied: 1, checkpoint: 6n, failed: false });
      expect((await row()).applied).toBe(6);
      await replay.recordBatch({ applied: 4, checkpoint: 10n, failed: false }); // the target
      expect(replay.rebuilding).toBe(false);
      expect(await row()).toEqual({ status: 'done', applied: 10, error: null });
      await replay.recordBatch({ applied: 9, checkpoint: 19n, failed: false }); // over: nothing more is written
      expect((await row()).applied).toBe(10);
    } finally {
      vi.useRealTimers();
    }
  });

  it("ends failed with the projection's recorded error; the rebuild target outlives the request", async () => {
    await db.pool.query(
      `INSERT INTO projection_checkpoints (name, position, state, last_error)
       VALUES ('p', 6, 'failed', '{"position": "7", "type": "E", "message": "boom"}')
       ON CONFLICT (name) DO UPDATE SET last_error = excluded.last_error`,
    );
    const replay = replayOf();
    replay.serve({ id, target: 10n });
    await replay.recordBatch({ applied: 6, checkpoint: 6n, failed: true });
    expect(await row()).toEqual({ status: 'failed', applied: 6, error: 'handler failed at position 7 (E): boom' });
    // A retry resumes the half-rebuilt read model: still `replaying` until the target, with nothing more reported.
    expect(replay.rebuilding).toBe(true);
    await replay.fail();
    await replay.recordBatch({ applied: 4, checkpoint: 10n, failed: false });
    expect(replay.rebuilding).toBe(false);
    expect(await row()).toEqual({ status: 'failed', applied: 6, error: 'handler failed at position 7 (E): boom' });
  });

  it('the empty store: target 0 rebuilds nothing and is done at once', async () => {
    const replay = replayOf();
    replay.serve({ id, target: 0n });
    expect([replay.rebuilding, replay.reachedBy(0n)]).toEqual([false, false]);
    await replay.finishIfNothingToRebuild(0n);
    expect(await row()).toEqual({ status: 'done', applied: 0, error: null });
  });

  it('resumes the request a previous owner was running, and without one writes nothing', async () => {
    const idle = replayOf();
    await idle.recordBatch({ applied: 5, checkpoint: 5n, failed: true });
    await idle.finishIfNothingToRebuild(5n);
    await idle.fail();
    expect(await row()).toEqual({ status: 'running', applied: 0, error: null });

    const resumed = replayOf();
    await resumed.resumeRunning();
    expect(resumed.target).toBe(10n);
    await resumed.recordBatch({ applied: 10, checkpoint: 10n, failed: false });
    expect(await row()).toEqual({ status: 'done', applied: 10, error: null });
  });
});
