import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { defineProjection, EventStore, type Runner } from '../../../src/index.js';
import { readStatus } from '../../../src/cli/status.js';
import { storeNames } from '../../../src/db/identifiers.js';
import { markedBlock } from '../../support/docs.js';
import { createTestDatabase, waitFor, type TestDatabase } from '../../support/database.js';
import { capturingLogger, startRunner } from '../../support/runner.js';

/** The grants of docs/operations.md's "Least privileges" block, as documented (the test fails if the docs drift). */
function documentedGrants(database: string, role: string): string {
  return markedBlock('docs/operations.md', 'least-privileges')
    .replace(/\bDATABASE app\b/g, `DATABASE ${database}`)
    .replace(/\brunner\b/g, role);
}

let db: TestDatabase;
let runner: Runner | undefined;
const role = `runner_${Math.random().toString(36).slice(2, 8)}`;
const password = 'least-privilege-secret';

beforeAll(async () => {
  db = await createTestDatabase();
  await db.pool.query(`CREATE ROLE ${role} LOGIN PASSWORD '${password}'`);
  await db.pool.query(documentedGrants(db.name, role));
  // The read model of the projection below, created by the owner: the runner role only writes it.
  await db.pool.query(`CREATE TABLE seen (position bigint PRIMARY KEY); GRANT SELECT, INSERT ON seen TO ${role}`);
});
afterAll(async () => {
  await runner?.stop();
  await db.pool.query(`DROP OWNED BY ${role}; DROP ROLE ${role}`).catch(() => {});
  await db.drop();
});

const seen = defineProjection({
  name: 'seen',
  async handle(event, tx) {
    await tx.query('INSERT INTO seen (position) VALUES ($1)', [event.globalPosition.toString()]);
  },
});

describe('the runner with exactly the documented privileges', () => {
  it('applies events, resolves gaps by timeout (no pg_read_all_stats: said once), and never logs the password', async () => {
    const url = db.url.replace(/\/\/[^@]+@/, `//${role}:${password}@`);
    const { log, lines } = capturingLogger();
    runner = await startRunner({ ...db, url }, { projections: [seen], gapEvidence: 'auto', gapTimeoutMs: 1_500, log });
    expect(lines.filter((l) => String(l.msg).startsWith('gap evidence unavailable'))).toHaveLength(1);

    const store = new EventStore(db.pool);
    await store.append('a', [{ type: 'E', data: {} }]);
    const held = await db.connect();
    await held.query('BEGIN');
    const doomed = await store.append('doomed', [{ type: 'E', data: {} }], { client: held });
    await store.append('b', [{ type: 'E', data: {} }]);
    await waitFor('gap seen', async () => (await db.pool.query('SELECT 1 FROM projection_gaps')).rows.length > 0);
    await held.query('ROLLBACK');
    await waitFor('applied past the gap', async () => (await db.pool.query('SELECT count(*)::int AS n FROM seen')).rows[0].n === 2, 10_000);
    const { rows: gaps } = await db.pool.query('SELECT from_position::int AS p, resolution FROM projection_gaps');
    expect(gaps).toEqual([{ p: Number(doomed.firstPosition), resolution: 'timed_out' }]);

    // `status` run with the runner's role: its privileges are enough.
    const asRunner = new pg.Pool({ connectionString: url });
    const status = await readStatus(asRunner, storeNames()).finally(() => asRunner.end());
    expect(status.projections).toMatchObject([{ name: 'seen', position: 3, owner: expect.stringMatching(/\/\d+$/) }]);
    expect(JSON.stringify(lines)).not.toContain(password);
  });
});

describe('a role that may not read the events sequence', () => {
  it('says so once at start, and the high-water mark still moves (evidence on, no samples)', async () => {
    const other = await createTestDatabase();
    const weak = `weak_${Math.random().toString(36).slice(2, 8)}`;
    let weakRunner: Runner | undefined;
    try {
      await other.pool.query(`CREATE ROLE ${weak} LOGIN PASSWORD '${password}'`);
      await other.pool.query(documentedGrants(other.name, weak));
      await other.pool.query(`REVOKE ALL ON SEQUENCE events_global_position_seq FROM ${weak}; GRANT pg_read_all_stats TO ${weak}`);
      await other.pool.query(`CREATE TABLE seen (position bigint PRIMARY KEY); GRANT SELECT, INSERT ON seen TO ${weak}`);
      const url = other.url.replace(/\/\/[^@]+@/, `//${weak}:${password}@`);
      const { log, lines } = capturingLogger();
      weakRunner = await startRunner({ ...other, url }, { projections: [seen], gapEvidence: 'auto', gapTimeoutMs: 60_000, log });
      expect(lines.filter((l) => String(l.msg).startsWith('no SELECT or USAGE on the events sequence'))).toHaveLength(1);
      const store = new EventStore(other.pool);
      for (let i = 0; i < 5; i++) await store.append(`s-${i}`, [{ type: 'E', data: {} }]);
      await waitFor(
        'high-water mark moved and events applied',
        async () =>
          weakRunner!.positions.highWater === 5n && (await other.pool.query('SELECT count(*)::int AS n FROM seen')).rows[0].n === 5,
      );
      expect(lines.filter((l) => l.msg === 'high-water pass failed')).toEqual([]);
    } finally {
      await weakRunner?.stop();
      await other.pool.query(`DROP OWNED BY ${weak}; DROP ROLE ${weak}`).catch(() => {});
      await other.drop();
    }
  });
});
