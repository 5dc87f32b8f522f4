import pg from 'pg';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ConfigError, EventStore } from '../../../src/index.js';
import { storeNames, type StoreNamesOptions } from '../../../src/db/identifiers.js';
import { migrate } from '../../../src/db/migrate.js';
import { prepareStore } from '../../../src/sources/prepare.js';
import { createTestDatabase, type TestDatabase } from '../../support/database.js';
import { insertLedger, LEDGER_DDL, LEDGER_SOURCE } from '../../support/foreign/custom-ledger.js';
import { positionsIn } from '../../support/foreign/workload.js';
import { expectExactlyOnceInOrder, positionLog, readLog } from '../../support/position-log.js';
import { startRunner } from '../../support/runner.js';
import { waitFor } from '../../support/database.js';

/**
 * Issue 26, item 1: two event tables on one runner schema. A runner schema's H, gaps and checkpoints describe one
 * table; a second table on the same `--schema` is refused at start with a ConfigError naming both tables and
 * `--schema`, before anything is created for it (src/db/runner-schema.ts).
 */
let db: TestDatabase;
beforeEach(async () => {
  db = await createTestDatabase({ migrated: false });
  await db.pool.query(LEDGER_DDL);
  await db.pool.query(`CREATE TABLE app.journal (LIKE app.ledger INCLUDING DEFAULTS INCLUDING IDENTITY)`);
});
afterEach(() => db.drop());

const LEDGER: StoreNamesOptions = { ...LEDGER_SOURCE };
const JOURNAL: StoreNamesOptions = { ...LEDGER_SOURCE, eventsTable: 'app.journal' };
const REFUSED = (served: string, refused: string, schema = 'public') =>
  new RegExp(
    `^invalid --schema \\(PROJECTION_RUNNER_SCHEMA\\): the runner schema "${schema}" serves the event table ${served.replace('.', '\\.')} \\(its high-water mark, gaps and checkpoints\\), not ${refused.replace('.', '\\.')}: give each event table a runner schema of its own: --schema \\(PROJECTION_RUNNER_SCHEMA\\)$`,
  );

const triggerCount = async (table: string) =>
  Number(
    (await db.pool.query<{ n: string }>(`SELECT count(*) AS n FROM pg_trigger WHERE tgrelid = $1::regclass AND NOT tgisinternal`, [table]))
      .rows[0]!.n,
  );

describe('two event tables on one runner schema', () => {
  it('the second table is refused by migrate and at start, naming both tables and --schema; nothing is attached to it', async () => {
    await prepareStore(db.pool, storeNames(LEDGER));
    const refused = prepareStore(db.pool, storeNames(JOURNAL));
    await expect(refused).rejects.toThrow(ConfigError);
    await expect(prepareStore(db.pool, storeNames(JOURNAL))).rejects.toThrow(REFUSED('app.ledger', 'app.journal'));
    await expect(startRunner(db, { ...JOURNAL, projections: [positionLog('j')] })).rejects.toThrow(REFUSED('app.ledger', 'app.journal'));
    expect(await triggerCount('app.journal')).toBe(0);
    // The first table's runner is untouched: its schema still serves it.
    expect((await prepareStore(db.pool, storeNames(LEDGER))).applied).toEqual([]);
    const { rows } = await db.pool.query(`SELECT source FROM projection_high_water`);
    expect(rows).toEqual([{ source: 'app.ledger' }]);
  });

  it('a foreign table on the schema of a native one is refused with a ConfigError, not a raw 42P07', async () => {
    await migrate(db.pool, storeNames());
    await expect(prepareStore(db.pool, storeNames(LEDGER))).rejects.toThrow(REFUSED('public.events', 'app.ledger'));
    expect(await triggerCount('app.ledger')).toBe(0);
    const { rows } = await db.pool.query(`SELECT to_regclass('projection_migrations') IS NULL AS none`);
    expect(rows).toEqual([{ none: true }]);
  });

  it('and a native table on the schema of a foreign one, and a second native table: refused, no events table made', async () => {
    await prepareStore(db.pool, storeNames(LEDGER));
    await expect(migrate(db.pool, storeNames())).rejects.toThrow(REFUSED('app.ledger', 'public.events'));
    await expect(new EventStore(db.pool, { schema: 'store' }).migrate()).resolves.toContain(8);
    await expect(new EventStore(db.pool, { schema: 'store', table: 'other' }).migrate()).rejects.toThrow(
      REFUSED('store.events', 'store.other', 'store'),
    );
    const { rows } = await db.pool.query(`SELECT to_regclass('public.events') IS NULL AS a, to_regclass('store.other') IS NULL AS b`);
    expect(rows).toEqual([{ a: true, b: true }]);
  });

  it('a store that has a higher migration but not 8 (numbers merged out of order) gets 8 applied, and is recorded', async () => {
    await migrate(db.pool, storeNames());
    await db.pool.query(`DELETE FROM events_migrations WHERE version = 8; ALTER TABLE projection_high_water DROP COLUMN source`);
    await expect(migrate(db.pool, storeNames())).resolves.toEqual([8]);
    const { rows } = await db.pool.query(`SELECT source FROM projection_high_water`);
    expect(rows).toEqual([{ source: 'public.events' }]);
  });

  it('two tables migrating one fresh schema at once: exactly one wins, the other is refused', async () => {
    const pools = [new pg.Pool({ connectionString: db.url, max: 1 }), new pg.Pool({ connectionString: db.url, max: 1 })];
    try {
      const outcomes = await Promise.allSettled([
        prepareStore(pools[0]!, storeNames(LEDGER)),
        prepareStore(pools[1]!, storeNames(JOURNAL)),
      ]);
      expect(outcomes.filter((o) => o.status === 'fulfilled')).toHaveLength(1);
      const [failure] = outcomes.filter((o): o is PromiseRejectedResult => o.status === 'rejected');
      expect(failure!.reason).toBeInstanceOf(ConfigError);
      const { rows } = await db.pool.query<{ source: string }>(`SELECT source FROM projection_high_water`);
      const winner = rows[0]!.source;
      expect(failure!.reason.message).toMatch(REFUSED(winner, winner === 'app.ledger' ? 'app.journal' : 'app.ledger'));
    } finally {
      await Promise.all(pools.map((p) => p.end()));
    }
  });

  it('the way out, a runner schema per table: a writer held open on one table is applied, both tables exactly once', async () => {
    const a = await startRunner(db, { ...LEDGER, schema: 'runner_ledger', projections: [positionLog('ledger')] });
    const b = await startRunner(db, { ...JOURNAL, schema: 'runner_journal', projections: [positionLog('journal')] });
    try {
      const held = await db.connect();
      await held.query('BEGIN');
      await insertLedger(db.pool, 'l-1', 1);
      await insertLedger(held, 'l-2', 1);
      for (let i = 1; i <= 20; i++) {
        await db.pool.query(`INSERT INTO app.journal (stream, version, kind, body) VALUES ($1, 1, 'Noted', '{}')`, [`j-${i}`]);
        await insertLedger(db.pool, `l-${i + 2}`, 1);
      }
      const journal = await positionsIn(db.pool, 'app.journal', 'id');
      await waitFor('the journal applied', async () => (await readLog(db.pool, 'journal')).length === journal.length, 20_000);
      await held.query('COMMIT');
      await held.end();
      const ledger = await positionsIn(db.pool, 'app.ledger', 'id');
      await waitFor('the ledger applied', async () => (await readLog(db.pool, 'ledger')).length === ledger.length, 20_000);
      await expectExactlyOnceInOrder(db.pool, 'ledger', ledger);
      await expectExactlyOnceInOrder(db.pool, 'journal', journal);
      expect((await readLog(db.pool, 'ledger')).filter((r) => r.late)).toEqual([]);
    } finally {
      await a.stop();
      await b.stop();
    }
  });
});
