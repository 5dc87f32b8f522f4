import { describe, expect, it } from 'vitest';
import type pg from 'pg';
import { waitFor } from '../../support/database.js';
import { committedPositions, positionLog, readLog } from '../../support/position-log.js';
import { startRunner, useRunnerFixture } from '../../support/runner.js';

/**
 * `onError: 'skip'` under the chaos suite's kind of writers: concurrent appends with rollbacks, savepoint-aborted
 * transactions and slow ones, poison events among them, and a runner restarted half-way. Every committed event ends
 * in exactly one place: applied once, or dead-lettered once (the poison ones, and only those).
 */
const t = useRunnerFixture();

async function writer(client: pg.Client, id: number, appends: number, seed: number) {
  let state = seed;
  const random = () => (state = (state * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
  for (let i = 0; i < appends; i++) {
    const poison = random() < 0.03;
    const roll = random();
    await client.query('BEGIN');
    await t.store.append(`w${id}-${i}`, [{ type: 'E', data: { poison } }], { client });
    if (roll < 0.1) {
      // An ORM's nested transaction: an error inside a savepoint, rolled back to it, then the outer commit.
      await client.query('SAVEPOINT nested');
      await client.query('SELECT 1 / 0').catch(() => {});
      await client.query('ROLLBACK TO SAVEPOINT nested');
    }
    if (roll > 0.97) await new Promise((r) => setTimeout(r, 30)); // a slow transaction: a gap that fills
    await client.query(roll > 0.9 && roll <= 0.97 ? 'ROLLBACK' : 'COMMIT');
  }
}

describe('onError skip under concurrent writers', () => {
  it('ends with every committed event applied once or dead-lettered once, never both, never neither', async () => {
    const projection = () => ({
      ...positionLog('log', { failAt: (e) => (e.data as { poison?: boolean }).poison === true }),
      onError: 'skip' as const,
    });
    const options = { gapTimeoutMs: 2_000, handlerRetries: 1, gapEvidence: 'auto' as const };
    t.runner = await startRunner(t.db, { projections: [projection()], ...options });
    const clients = await Promise.all(Array.from({ length: 4 }, () => t.db.connect()));
    const writing = Promise.all(clients.map((c, i) => writer(c, i, 120, 17 + i)));
    // Half-way, the runner stops and a new one takes over from the checkpoint.
    await waitFor('some progress', async () => (await readLog(t.db.pool, 'log')).length > 100);
    await t.runner.stop();
    t.runner = await startRunner(t.db, { projections: [projection()], ...options });
    await writing;

    const committed = await committedPositions(t.db.pool);
    const poison = (
      await t.db.pool.query(`SELECT global_position::int AS p FROM events WHERE (data->>'poison')::boolean ORDER BY 1`)
    ).rows.map((r) => r.p as number);
    expect(poison.length).toBeGreaterThan(3);
    const deadLetters = async () =>
      (await t.db.pool.query(`SELECT global_position::int AS p FROM projection_dead_letters WHERE projection = 'log' ORDER BY 1`)).rows.map(
        (r) => r.p as number,
      );
    await waitFor(
      'every committed event applied or dead-lettered',
      async () => (await readLog(t.db.pool, 'log')).length + (await deadLetters()).length === committed.length,
      60_000,
    );
    const log = await readLog(t.db.pool, 'log');
    expect(log.filter((r) => r.applied !== 1)).toEqual([]);
    expect(await deadLetters()).toEqual(poison);
    const applied = log.map((r) => r.position).sort((a, b) => a - b);
    expect(applied).toEqual(committed.filter((p) => !poison.includes(p)));
    const inOrder = log.filter((r) => !r.late).map((r) => r.position);
    expect(inOrder).toEqual([...inOrder].sort((a, b) => a - b));
    console.log(`skip policy: ${committed.length} committed, ${applied.length} applied, ${poison.length} dead-lettered`);
  });
});
