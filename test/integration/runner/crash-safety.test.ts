import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EventStore } from '../../../src/index.js';
import { createTestDatabase, waitFor, type TestDatabase } from '../../support/database.js';
import { startDaemon } from '../../support/child-runner.js';
import { committedPositions, expectExactlyOnceInOrder, waitUntilAllApplied } from '../../support/position-log.js';

let db: TestDatabase;
beforeAll(async () => {
  db = await createTestDatabase();
});
afterAll(() => db.drop());

/** Writers that keep appending (library appends and plain INSERTs) with random rollbacks, until stopped. */
function startWriters(count: number, signal: AbortSignal) {
  const store = new EventStore(db.pool);
  return Promise.all(
    Array.from({ length: count }, async (_, w) => {
      const client = await db.connect();
      let i = 0;
      while (!signal.aborted) {
        await client.query('BEGIN');
        if (i % 4 === 3) {
          await client.query(`INSERT INTO events (stream_name, stream_position, type, data) VALUES ($1, 1, 'Plain', '{}')`, [
            `plain-${w}-${i}`,
          ]);
        } else {
          await store.append(
            `w${w}-${i % 20}`,
            [
              { type: 'E', data: { i } },
              { type: 'E', data: { i } },
            ],
            { client },
          );
        }
        await client.query(Math.random() < 0.15 ? 'ROLLBACK' : 'COMMIT');
        i++;
        await new Promise((r) => setTimeout(r, Math.random() * 10));
      }
    }),
  );
}

describe('a runner SIGKILLed mid-batch again and again', () => {
  it('ends with every committed event applied exactly once, in global order', async () => {
    const writing = new AbortController();
    const writers = startWriters(4, writing.signal);
    const kills = 6;
    for (let kill = 0; kill < kills; kill++) {
      const daemon = startDaemon(db.url, ['--gap-timeout', '1s', '--batch-size', '7', '--gap-evidence', 'off'], {
        PROJECTION_RUNNER_LOG_LEVEL: 'info',
      });
      // Once it runs, let it work a random while (often mid-batch: batches are tiny), then kill it without warning.
      await waitFor('daemon started', () => daemon.output.join('').includes('"msg":"runner started"'), 30_000);
      await new Promise((r) => setTimeout(r, 300 + Math.random() * 1200));
      daemon.child.kill('SIGKILL');
      await daemon.exited;
    }
    writing.abort();
    await writers;
    // The killed daemons did real work between kills (the final one only finishes it).
    const { rows: progress } = await db.pool.query('SELECT min(position)::int AS p FROM projection_checkpoints');
    expect(progress[0].p).toBeGreaterThan(0);

    const final = startDaemon(db.url, ['--gap-timeout', '1s']);
    try {
      const committed = await committedPositions(db.pool);
      await waitUntilAllApplied(db.pool, committed, ['chaos_a', 'chaos_b'], 40_000);
      for (const name of ['chaos_a', 'chaos_b']) await expectExactlyOnceInOrder(db.pool, name, committed);
      console.info(`crash-safety: ${committed.length} events, ${kills} SIGKILLs`);
    } finally {
      final.child.kill('SIGTERM');
      expect(await final.exited).toBe(0);
    }
  }, 120_000);
});
