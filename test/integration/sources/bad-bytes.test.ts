import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { defineProjection, type Projection } from '../../../src/index.js';
import { createTestDatabase, waitFor, type TestDatabase } from '../../support/database.js';
import { insertLedger, LEDGER_DDL, LEDGER_SOURCE } from '../../support/foreign/custom-ledger.js';
import { positionsIn } from '../../support/foreign/workload.js';
import { expectExactlyOnceInOrder, positionLog, readLog } from '../../support/position-log.js';
import { startRunner } from '../../support/runner.js';

/**
 * Issue 26, item 4: one bad byte wedges every projection. A custom source's `json` metadata column may hold the valid
 * JSON escape \u0000, which jsonb refuses (22P05). No single row may stop a projection for ever: the event is
 * delivered as JSON allows, and a handler that cannot store it fails at that event alone, under its error policy
 * (a dead letter keeps the event, \u0000 and all).
 */
let db: TestDatabase;
beforeEach(async () => {
  db = await createTestDatabase({ migrated: false });
  await db.pool.query(LEDGER_DDL);
});
afterEach(() => db.drop());

/** Stores each event's metadata in a jsonb column: fails on \u0000 like any handler that keeps it in jsonb. */
function metadataCopy(name: string, onError: 'skip' | 'stop'): Projection {
  return defineProjection({
    name,
    onError,
    async setup(tx) {
      await tx.query(`CREATE TABLE IF NOT EXISTS meta_${name} (position bigint PRIMARY KEY, meta jsonb)`);
    },
    async handle(event, tx) {
      await tx.query(`INSERT INTO meta_${name} VALUES ($1, $2)`, [event.globalPosition.toString(), JSON.stringify(event.metadata)]);
    },
  });
}

describe('one bad byte wedges every projection', () => {
  it('a json metadata \\u0000 is delivered to every projection; one that cannot store it fails at that event alone (skip: a dead letter, stop: failed there)', async () => {
    const notes: string[] = [];
    const reader = defineProjection({
      name: 'reader',
      async handle(event, tx) {
        await tx.query('SELECT 1');
        notes.push(String((event.metadata as { note?: string }).note ?? ''));
      },
    });
    for (let i = 1; i <= 3; i++) await insertLedger(db.pool, `s-${i}`, 1);
    const { rows } = await db.pool.query<{ id: number }>(
      `INSERT INTO app.ledger (stream, version, kind, body, meta) VALUES ('bad', 1, 'Booked', '{}', '{"note": "a\\u0000b"}') RETURNING id::int`,
    );
    const bad = rows[0]!.id;
    for (let i = 4; i <= 6; i++) await insertLedger(db.pool, `s-${i}`, 1);
    const committed = await positionsIn(db.pool, 'app.ledger', 'id');

    const runner = await startRunner(db, {
      ...LEDGER_SOURCE,
      handlerRetries: 0,
      projections: [positionLog('log'), reader, metadataCopy('skipper', 'skip'), metadataCopy('stopper', 'stop')],
    });
    try {
      await waitFor('the log applied every event', async () => (await readLog(db.pool, 'log')).length === committed.length, 20_000);
      await expectExactlyOnceInOrder(db.pool, 'log', committed);
      await waitFor(
        'the reader and the skipper went past the event, the stopper failed at it',
        async () => {
          const { rows: states } = await db.pool.query(`SELECT name, state, position::int FROM projection_checkpoints ORDER BY name`);
          const by = Object.fromEntries(states.map((r) => [r.name, r]));
          return by.reader?.position === committed.at(-1) && by.skipper?.position === committed.at(-1) && by.stopper?.state === 'failed';
        },
        20_000,
      );
      expect(notes).toContain('a\u0000b');
      const { rows: letters } = await db.pool.query(`SELECT global_position::int AS p, metadata, error FROM projection_dead_letters`);
      expect(letters).toEqual([{ p: bad, metadata: { note: 'a\u0000b' }, error: expect.stringMatching(/Unicode escape/) }]);
      const { rows: copied } = await db.pool.query(`SELECT position::int AS p FROM meta_skipper ORDER BY 1`);
      expect(copied.map((r) => r.p)).toEqual(committed.filter((p) => p !== bad));
      const { rows: stopper } = await db.pool.query(
        `SELECT position::int AS p, last_error->>'position' AS at FROM projection_checkpoints WHERE name = 'stopper'`,
      );
      expect(stopper).toEqual([{ p: bad - 1, at: String(bad) }]);
    } finally {
      await runner.stop();
    }
  });
});
