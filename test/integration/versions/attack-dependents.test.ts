import { describe, expect, it } from 'vitest';
import { type Projection } from '../../../src/index.js';
import { storeNames } from '../../../src/db/identifiers.js';
import { readBuilds, requestRebuild } from '../../../src/versions/builds-sql.js';
import { waitFor } from '../../support/database.js';
import { startRunner, useRunnerFixture } from '../../support/runner.js';
import { versionedBalances, versionRoles } from '../../support/versioned.js';

/**
 * Attack: the README tells applications to "recreate such objects on the names" (a view of their own over the read
 * model). The next switch replaces the runner's views with DROP VIEW + CREATE VIEW (switchStatements), and DROP VIEW
 * fails on a view that has dependents (2BP01). switchToBuild rethrows anything but 55P03/40P01/ReadNameTaken, so the
 * projector's batch loop retries it as a "database error" forever (backoff, db_errors_total), with no switch_error for
 * `rebuild`/`status` to show: the rebuild never goes live.
 */
const fixture = useRunnerFixture();
const names = storeNames();

const acct = (version: number): Projection => versionedBalances(version);

const builds = async () => readBuilds(fixture.db.pool, names, 'acct');
const roles = () => versionRoles(fixture.db.pool, 'acct');

describe('attack: an application view on the names', () => {
  it('a later switch goes through (or at least says why not) when the application has a view over the names', async () => {
    const { db, store } = fixture;
    for (let i = 0; i < 6; i++) await store.append(`a-${i % 2}`, [{ type: 'E', data: {} }]);
    const old = await startRunner(db, { projections: [acct(1)] });
    await waitFor('v1 built', async () => (await roles()) === '1:live');
    const next = await startRunner(db, { projections: [acct(2)] });
    await waitFor('v2 live', async () => (await roles()) === '1:kept,2:live');
    await old.stop();
    // As the README advises after the first switch: the application's own view, recreated on the name.
    await db.pool.query(`CREATE VIEW report AS SELECT sum(balance) AS total FROM balances`);

    await requestRebuild(db.pool, names, 'acct', 'auto');
    let outcome = '';
    try {
      await waitFor('v3 live', async () => (outcome = await roles()) === '1:kept,2:kept,3:live', 10_000);
    } catch {
      const building = (await builds()).find((b) => b.role === 'building');
      outcome = `${await roles()} (switch_error: ${building?.switchError ?? 'none recorded'})`;
    }
    const report = (await db.pool.query('SELECT total::int AS t FROM report')).rows[0].t;
    await next.stop();
    expect(outcome).toBe('1:kept,2:kept,3:live');
    expect(report).toBe(6);
  }, 30_000);
});
