import { describe, expect, it } from 'vitest';
import { storeNames } from '../../../src/db/identifiers.js';
import { readBuilds } from '../../../src/versions/builds-sql.js';
import { waitFor } from '../../support/database.js';
import { startRunner, useRunnerFixture } from '../../support/runner.js';
import { versionedBalances, versionRoles } from '../../support/versioned.js';

/**
 * Issue 26, item 3: a REPEATABLE READ reader across a switch reads an empty read model. Its snapshot is taken before
 * the new version is built (by any statement: here it counts the events), it reads the read names only after the
 * switch: they resolve to the new version's views, whose tables its old snapshot sees empty (0 rows where the read
 * model had 50). The switch must wait (bounded, the reason recorded for `rebuild`/`switch` to show) until no such
 * snapshot is in use; the reader then sees the read model it began with, and the switch comes once it has ended.
 */
const fixture = useRunnerFixture();
const names = storeNames();
const EVENTS = 50;
const roles = () => versionRoles(fixture.db.pool, 'acct');
const switchError = async () => (await readBuilds(fixture.db.pool, names, 'acct')).find((b) => b.version === 2)?.switchError ?? '';

describe('issue 26 item 3: a reader whose snapshot predates the switch', () => {
  it.each(['REPEATABLE READ', 'SERIALIZABLE'])(
    'under %s, reads the whole read model (not an empty new version) when it reads the names after the switch was due',
    async (isolation) => {
      const { db, store } = fixture;
      for (let i = 0; i < EVENTS; i++) await store.append(`a-${i % 5}`, [{ type: 'E', data: {} }]);
      const old = await startRunner(db, { projections: [versionedBalances(1)] });
      await waitFor('v1 built', async () => (await db.pool.query('SELECT sum(balance)::int AS s FROM balances')).rows[0].s === EVENTS);

      const reader = await db.connect();
      await reader.query(`BEGIN ISOLATION LEVEL ${isolation}`);
      await reader.query('SELECT count(*) FROM events'); // the snapshot, taken on a statement that reads no read name
      const next = await startRunner(db, { projections: [versionedBalances(2)] });
      // Version 2 is built after the reader's snapshot; the switch is due: done (before the fix) or held back for it.
      await waitFor(
        'the switch done or waiting for the old snapshot',
        async () => (await roles()) === '1:kept,2:live' || /snapshot older than the new version's data/.test(await switchError()),
        60_000,
      );
      const seen = (await reader.query('SELECT count(*)::int AS n, coalesce(sum(balance), 0)::int AS s FROM balances')).rows[0];
      const whileOpen = await roles();
      await reader.query('COMMIT');

      await waitFor('v2 live once the reader is gone', async () => (await roles()) === '1:kept,2:live', 60_000);
      const after = (await db.pool.query('SELECT count(*)::int AS n, sum(balance)::int AS s, min(version) AS v FROM balances')).rows[0];
      await next.stop();
      await old.stop();
      expect(seen).toEqual({ n: 5, s: EVENTS });
      expect(whileOpen).toBe('1:live,2:building');
      expect(after).toEqual({ n: 5, s: EVENTS, v: 2 });
    },
    120_000,
  );
});
