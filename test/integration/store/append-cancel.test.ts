import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EventStore } from '../../../src/index.js';
import { createTestDatabase, type TestDatabase } from '../../support/database.js';

/**
 * events_append reserves consecutive positions under a session-level advisory lock. PL/pgSQL checks for interrupts
 * before every statement, so a cancel or a statement_timeout can land between any two of them; a lock left behind
 * outlives the aborted transaction on a pooled connection and every later append waits on it for ever.
 */
let db: TestDatabase;
beforeAll(async () => {
  db = await createTestDatabase();
});
afterAll(async () => {
  await db.drop();
});

const positionsLocks = (pid: number) =>
  db.pool
    .query(
      `SELECT count(*)::int AS n FROM pg_locks
        WHERE locktype = 'advisory' AND pid = $1 AND objsubid = 2 AND objid = 0
          AND classid::bigint = (hashtext('public.events:positions')::bigint + 4294967296) % 4294967296`,
      [pid],
    )
    .then((r) => r.rows[0].n as number);

describe('events_append under cancels and timeouts', () => {
  it('leaves no positions lock behind, whichever statement the interrupt hits (hundreds of trials)', async () => {
    const writer = await db.connect();
    const canceller = await db.connect();
    const interferer = await db.connect();
    const rival = await db.connect();
    const { rows } = await writer.query('SELECT pg_backend_pid() AS pid');
    const pid = rows[0].pid as number;
    const store = new EventStore(db.pool);
    // Large appends make the reservation loop long enough for interrupts to land inside and around it; plain
    // INSERTs interleaving make it restart, which lengthens it further.
    const events = Array.from({ length: 400 }, (_, i) => ({ type: 'E', data: { i } }));
    let cancelled = 0;
    let completed = 0;
    // The SET itself runs under the previous trial's timeout (1-7 ms), which a loaded machine can exceed: that
    // interrupt is not one this test is about, so the SET is sent again until it took.
    const setStatementTimeout = async (ms: number) => {
      for (;;) {
        try {
          return await writer.query(`SET statement_timeout = ${ms}`);
        } catch (error) {
          if ((error as { code?: string }).code !== '57014') throw error;
        }
      }
    };
    for (let trial = 0; trial < 600; trial++) {
      const viaTimeout = trial % 2 === 0;
      await setStatementTimeout(viaTimeout ? 1 + (trial % 7) : 0);
      const append = store.append(`s-${trial}`, events, { client: writer }).then(
        () => 'ok',
        (error: { code?: string }) => error.code,
      );
      // A plain INSERT (interleaves with the reservation) and a rival append (contends for the positions lock, so
      // the writer is often granted it at an arbitrary moment relative to the interrupt).
      const noise = Promise.all([
        interferer.query(`INSERT INTO events (stream_name, stream_position, type, data) VALUES ('noise-${trial}', 1, 'N', '{}')`),
        store.append(`rival-${trial}`, events.slice(0, 50), { client: rival }),
      ]);
      if (!viaTimeout) {
        // A cancel after a varying delay: from "at once" to "after the reservation".
        await new Promise((r) => setTimeout(r, trial % 5));
        await canceller.query('SELECT pg_cancel_backend($1)', [pid]);
      }
      const outcome = await append;
      await noise;
      if (outcome === 'ok') completed++;
      else {
        expect(outcome).toBe('57014'); // query_canceled: by pg_cancel_backend or statement_timeout
        cancelled++;
      }
      expect(await positionsLocks(pid)).toBe(0);
    }
    await setStatementTimeout(0);
    // Both outcomes happened many times: the trials did reach the interesting statements.
    expect(cancelled).toBeGreaterThan(30);
    expect(completed).toBeGreaterThan(0);

    // Another session appends at once (a leaked lock would make it wait; lock_timeout turns that into an error).
    const other = await db.connect();
    await other.query(`SET lock_timeout = '5s'`);
    const result = await store.append('after', [{ type: 'E', data: {} }], { client: other });
    expect(result.streamVersion).toBe(1n);
  });
});
