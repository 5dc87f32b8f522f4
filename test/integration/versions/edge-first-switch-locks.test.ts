import { describe, expect, it } from 'vitest';
import { storeNames } from '../../../src/db/identifiers.js';
import { readBuilds } from '../../../src/versions/builds-sql.js';
import { waitFor } from '../../support/database.js';
import { startRunner, useRunnerFixture } from '../../support/runner.js';
import { numberedEntries, versionRoles } from '../../support/versioned.js';

/**
 * Issue 26, item 7: the first switch can queue readers. The first version's relations that are not tables, views or
 * partitioned tables (here a sequence of its own) were moved without the NOWAIT pre-lock: the `ALTER SEQUENCE … SET
 * SCHEMA` waited up to 500 ms for a session using the sequence, and every reader of it queued behind that waiting
 * lock. Every relation the switch changes is taken without queueing: no lock request of the switch ever waits on it.
 */
const fixture = useRunnerFixture();
const names = storeNames();
const roles = () => versionRoles(fixture.db.pool, 'acct');
const switchError = async () => (await readBuilds(fixture.db.pool, names, 'acct')).find((b) => b.version === 2)?.switchError ?? '';

const numbered = (version: number) => numberedEntries(version, 'acct');

describe('issue 26 item 7: the first switch and relations LOCK TABLE refuses', () => {
  it('a session using the first version’s sequence holds the switch back; no reader ever queues behind it', async () => {
    const { db, store } = fixture;
    for (let i = 0; i < 10; i++) await store.append(`a-${i % 2}`, [{ type: 'E', data: {} }]);
    const old = await startRunner(db, { projections: [numbered(1)] });
    await waitFor('v1 built', async () => (await db.pool.query('SELECT count(*)::int AS n FROM entries')).rows[0].n === 10);

    // The application reads the sequence in a transaction left open (READ COMMITTED: it holds the lock, no snapshot).
    const holder = await db.connect();
    await holder.query('BEGIN');
    await holder.query('SELECT last_value FROM entry_no');
    const sequence = (await db.pool.query(`SELECT 'entry_no'::regclass::oid::int AS oid`)).rows[0].oid;
    const reader = await db.connect();
    const next = await startRunner(db, { projections: [numbered(2)] });

    // Until the switch has been tried and postponed: another reader of the sequence reads on, and no lock on the
    // sequence is ever awaited (a waiting ALTER would be; so would every reader queued behind it).
    let tried = false;
    const reading = (async () => {
      while (!tried) await reader.query('SELECT last_value FROM entry_no');
    })();
    const waiting: string[] = [];
    while (!tried) {
      const { rows } = await db.pool.query<{ mode: string; pid: number }>(
        `SELECT mode, pid FROM pg_locks WHERE locktype = 'relation' AND relation = $1 AND NOT granted`,
        [sequence],
      );
      waiting.push(...rows.map((r) => `${r.mode} by ${r.pid}`));
      tried = (await switchError()) !== '';
    }
    await reading;
    const reason = await switchError();
    await holder.query('COMMIT');
    await waitFor('v2 live once the sequence is free', async () => (await roles()) === '1:kept,2:live', 60_000);
    const moved = (await db.pool.query(`SELECT to_regclass('acct_v1.entry_no')::text AS s`)).rows[0].s;
    await next.stop();
    await old.stop();
    expect(waiting).toEqual([]);
    expect(reason).toMatch(/could not obtain lock on relation .*entry_no/);
    expect(moved).toBe('acct_v1.entry_no');
  }, 120_000);
});
