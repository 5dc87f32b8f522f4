import { afterEach, describe, expect, it } from 'vitest';
import { ConfigError, Runner } from '../../../src/index.js';
import { createTestDatabase, type TestDatabase } from '../../support/database.js';
import { LEDGER_DDL, LEDGER_SOURCE } from '../../support/foreign/custom-ledger.js';
import { positionLog } from '../../support/position-log.js';
import pino from 'pino';

/**
 * A position sequence that steps by k (issue 25): each value it steps over would be a dead gap (one skipped-position
 * row per projection for every event), and one sequence stepping cannot be told apart from an offset scheme of
 * several writers where every position exists. The start is refused, naming the table, the sequence and what to
 * change; nothing is written.
 */
let db: TestDatabase | undefined;
afterEach(async () => {
  await db?.drop();
  db = undefined;
});

async function refusal(options: Record<string, unknown>): Promise<unknown> {
  const runner = new Runner({
    connectionString: db!.url,
    log: pino({ level: 'silent' }),
    projections: [positionLog('log')],
    gapEvidence: 'off',
    ...options,
  });
  try {
    await runner.start();
    return undefined;
  } catch (error) {
    return error;
  } finally {
    await runner.stop();
  }
}

const runnerRows = async () =>
  (
    await db!.pool.query<{ gaps: number; checkpoints: number }>(
      `SELECT (SELECT count(*)::int FROM projection_gaps) AS gaps, (SELECT count(*)::int FROM projection_checkpoints) AS checkpoints`,
    )
  ).rows[0];

describe('a position sequence with INCREMENT BY other than 1', () => {
  it('the native sequence with INCREMENT BY 2: the start is refused with a ConfigError naming the table and the sequence', async () => {
    db = await createTestDatabase();
    await db.pool.query('ALTER SEQUENCE events_global_position_seq INCREMENT BY 2');
    await db.pool.query(
      `INSERT INTO events (stream_name, stream_position, type, data) SELECT 's', g, 'E', '{}' FROM generate_series(1, 3) g`,
    );
    const error = await refusal({});
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as Error).message).toBe(
      'invalid --source (PROJECTION_RUNNER_SOURCE): the sequence public.events_global_position_seq behind "public"."events" (global_position) has INCREMENT BY 2: the runner waits for every position it does not see as a gap, so each value the sequence steps over would become a dead gap, and it cannot tell one sequence stepping from several writers sharing the column in an offset scheme (where every position exists). Make it hand out every position: ALTER SEQUENCE public.events_global_position_seq INCREMENT BY 1 (an identity column: ALTER TABLE "public"."events" ALTER COLUMN "global_position" SET INCREMENT BY 1), with every writer taking its positions from it',
    );
    expect(await runnerRows()).toEqual({ gaps: 0, checkpoints: 0 });
  });

  it('an identity column with INCREMENT BY 5 (--source custom): refused before anything is created', async () => {
    db = await createTestDatabase({ migrated: false });
    await db.pool.query(LEDGER_DDL);
    await db.pool.query('ALTER TABLE app.ledger ALTER COLUMN id SET INCREMENT BY 5');
    const error = await refusal({ ...LEDGER_SOURCE, channel: 'ledger' });
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as Error).message).toMatch(
      /^invalid --column-position \(PROJECTION_RUNNER_COLUMN_POSITION\): the sequence app\.ledger_id_seq behind "app"\."ledger" \(id\) has INCREMENT BY 5: .* ALTER TABLE "app"\."ledger" ALTER COLUMN "id" SET INCREMENT BY 1\)/,
    );
    const { rows } = await db.pool.query(`SELECT to_regclass('projection_gaps') IS NULL AS none`);
    expect(rows[0]).toEqual({ none: true });
  });

  it('INCREMENT BY 1 (the default) starts', async () => {
    db = await createTestDatabase({ migrated: false });
    await db.pool.query(LEDGER_DDL);
    expect(await refusal({ ...LEDGER_SOURCE, channel: 'ledger' })).toBeUndefined();
  });
});
