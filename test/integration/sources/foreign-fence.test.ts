import type pg from 'pg';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Runner } from '../../../src/index.js';
import { createTestDatabase, waitFor, type TestDatabase } from '../../support/database.js';
import { insertLedger, LEDGER_DDL, LEDGER_SOURCE } from '../../support/foreign/custom-ledger.js';
import { positionLog, readLog } from '../../support/position-log.js';
import { startRunner } from '../../support/runner.js';
import { waitForTrackerPasses } from '../../support/tracker-passes.js';

/**
 * Issue 26, item 6: the settling proof for foreign writers whose position precedes their transaction id. On a
 * foreign table the position comes from a plain nextval() default (here an identity column), evaluated before BEFORE
 * ROW triggers: a writer whose trigger waits (a lock, a check) holds a position and no xid, longer than
 * --fence-delay. Its gap must not be settled before it inserts: its event arrives late through the watch, never
 * through the audit only.
 */
let db: TestDatabase;
let runner: Runner | undefined;
const LOCK = 4242;
/** app.ledger partitioned (as Emmett's table is): writers insert through the parent, rows routed to a partition. */
const PARTITIONED_LEDGER_DDL = `
  CREATE SCHEMA app;
  CREATE TABLE app.ledger (
    id bigserial NOT NULL, stream varchar(200) NOT NULL, version int NOT NULL, kind text NOT NULL, body jsonb NOT NULL,
    meta json, at timestamptz NOT NULL DEFAULT now()
  ) PARTITION BY HASH (stream);
  CREATE TABLE app.ledger_0 PARTITION OF app.ledger FOR VALUES WITH (MODULUS 2, REMAINDER 0);
  CREATE TABLE app.ledger_1 PARTITION OF app.ledger FOR VALUES WITH (MODULUS 2, REMAINDER 1);`;

async function createLedger(ddl: string) {
  await db.pool.query(ddl);
  // A check that waits: the 'slow' stream's rows wait in a BEFORE ROW trigger for a lock the test holds.
  await db.pool.query(`
    CREATE FUNCTION app.wait_for_check() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      IF NEW.stream = 'slow' THEN PERFORM pg_advisory_xact_lock(${LOCK}); END IF;
      RETURN NEW;
    END $$;
    CREATE TRIGGER wait_for_check BEFORE INSERT ON app.ledger FOR EACH ROW EXECUTE FUNCTION app.wait_for_check();`);
}
beforeEach(async () => {
  db = await createTestDatabase({ migrated: false });
});
afterEach(async () => {
  await runner?.stop();
  runner = undefined;
  await db.drop();
});

interface GapRow {
  f: number;
  resolution: string | null;
  fenced: boolean;
  settled: boolean;
}
const gapRows = async (): Promise<GapRow[]> =>
  (
    await db.pool.query(
      `SELECT from_position::int AS f, resolution, fence_xid IS NOT NULL AS fenced, settled_at IS NOT NULL AS settled
         FROM projection_gaps ORDER BY id`,
    )
  ).rows;

/** A writer inside BEGIN whose INSERT has taken its position and waits in the trigger; `slowPosition` is that position. */
async function writerStuckInTrigger(): Promise<{ writer: pg.Client; lock: pg.Client; inserted: Promise<unknown>; slowPosition: number }> {
  // nextval() takes an xid when it logs the sequence (every 32 values, and first after a checkpoint): the first value
  // here, so that the writer's is one that does not.
  await insertLedger(db.pool, 'first', 1);
  const lock = await db.connect();
  await lock.query('SELECT pg_advisory_lock($1)', [LOCK]);
  const writer = await db.connect();
  await writer.query('BEGIN');
  const inserted = writer.query(`INSERT INTO app.ledger (stream, version, kind, body) VALUES ('slow', 1, 'Booked', '{}')`);
  await waitFor('the writer waits in its trigger', async () => {
    const { rows } = await db.pool.query(`SELECT count(*)::int AS n FROM pg_locks WHERE locktype = 'advisory' AND NOT granted`);
    return rows[0].n === 1;
  });
  const slowPosition = (await insertLedger(db.pool, 'fast', 1)) - 1;
  return { writer, lock, inserted, slowPosition };
}

describe.each([
  ['a table', LEDGER_DDL],
  ['a partitioned table', PARTITIONED_LEDGER_DDL],
])('the settling proof for foreign writers whose position precedes their transaction id, on %s', (_, ddl) => {
  beforeEach(() => createLedger(ddl));
  const settings = { gapTimeoutMs: 300, fenceDelayMs: 100, projections: [positionLog('log')] };

  it('a writer held in a BEFORE trigger past --fence-delay keeps its gap watched; its event arrives late through the watch', async () => {
    runner = await startRunner(db, { ...LEDGER_SOURCE, ...settings });
    const { writer, lock, inserted, slowPosition } = await writerStuckInTrigger();
    await waitFor('the gap given up and fenced', async () => (await gapRows()).some((g) => g.f === slowPosition && g.fenced), 20_000);
    await waitForTrackerPasses(runner, 3);
    expect(await gapRows()).toEqual([{ f: slowPosition, resolution: 'timed_out', fenced: true, settled: false }]);

    await lock.query('SELECT pg_advisory_unlock($1)', [LOCK]);
    await inserted;
    await writer.query('COMMIT');
    await waitFor('the event delivered late', async () => (await readLog(db.pool, 'log')).some((r) => r.late), 20_000);
    expect(await readLog(db.pool, 'log')).toEqual([
      { position: slowPosition - 1, applied: 1, late: false },
      { position: slowPosition + 1, applied: 1, late: false },
      { position: slowPosition, applied: 1, late: true },
    ]);
    expect(await runner.metrics.lateAfterSettled.get()).toMatchObject({ values: [{ value: 0 }] });
    await Promise.all([writer.end(), lock.end()]);
  });

  it('the same writer rolled back: the gap settles once it has ended', async () => {
    runner = await startRunner(db, { ...LEDGER_SOURCE, ...settings });
    const { writer, lock, inserted, slowPosition } = await writerStuckInTrigger();
    await waitFor('the gap given up and fenced', async () => (await gapRows()).some((g) => g.f === slowPosition && g.fenced), 20_000);
    await lock.query('SELECT pg_advisory_unlock($1)', [LOCK]);
    await inserted;
    await writer.query('ROLLBACK');
    // The cluster-wide xmin waits for other test files' transactions too.
    await waitFor('settled', async () => (await gapRows())[0]?.settled, 45_000);
    await waitFor('the events around it applied', async () => (await readLog(db.pool, 'log')).length === 2, 20_000);
    expect(await readLog(db.pool, 'log')).toEqual([
      { position: slowPosition - 1, applied: 1, late: false },
      { position: slowPosition + 1, applied: 1, late: false },
    ]);
    await Promise.all([writer.end(), lock.end()]);
  });
});
