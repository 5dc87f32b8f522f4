import { describe, expect, it } from 'vitest';
import type { Projection } from '../../../src/index.js';
import { storeNames } from '../../../src/db/identifiers.js';
import { BuildRetiredError, VersionRequestError } from '../../../src/errors.js';
import { dropVersion, readBuilds, requestRebuild, requestSwitch } from '../../../src/versions/builds-sql.js';
import { waitFor } from '../../support/database.js';
import { startRunner, useRunnerFixture } from '../../support/runner.js';
import { versionedBalances } from '../../support/versioned.js';

/**
 * Blue/green versions of a read model: a version 2 module built beside version 1 (run by another runner: an old and a
 * new release of the application side by side), the switch of the names the application reads, the old version kept
 * and no longer updated, a rebuild of the same code, a switch back, and drop.
 */
const fixture = useRunnerFixture();
const names = storeNames();

/** Balances per account; `version` scales the amounts (v1: units, v2: cents), so a reader can tell them apart. */
const balances = (version: number): Projection =>
  versionedBalances(version, { name: 'balances', scale: version === 1 ? 1 : 100, amount: (event) => Number(event.data.amount) });

async function deposit(n: number, amount = 1) {
  for (let i = 0; i < n; i++) await fixture.store.append(`acct-${i % 5}`, [{ type: 'Deposited', data: { amount } }]);
}

const readModel = async () =>
  (
    await fixture.db.pool.query<{ account: string; balance: string; version: number }>(
      'SELECT account, balance, version FROM balances ORDER BY account',
    )
  ).rows;
const total = async () => (await readModel()).reduce((sum, r) => sum + Number(r.balance), 0);
const roles = async () => (await readBuilds(fixture.db.pool, names, 'balances')).map((b) => `${b.version}:${b.role}`);

describe('versioned read models (blue/green)', () => {
  it('builds version 2 beside version 1, switches the read names to it, keeps version 1 unchanged until dropped', async () => {
    const { db } = fixture;
    await deposit(50);
    const old = await startRunner(db, { projections: [balances(1)] });
    await waitFor('version 1 caught up', async () => (await total()) === 50);
    expect(await roles()).toEqual(['1:live']);
    const tableKind = async () =>
      (await db.pool.query(`SELECT relkind FROM pg_class WHERE oid = 'public.balances'::regclass`)).rows[0].relkind as string;
    expect(await tableKind()).toBe('r'); // the first version is in place: what the application read before versions

    // The new release of the application, while the old one still runs.
    const next = await startRunner(db, { projections: [balances(2)] });
    await waitFor('version 2 live', async () => (await roles()).join() === '1:kept,2:live');
    expect(await tableKind()).toBe('v'); // the application's name is a view now
    expect(await readModel()).toEqual(Array.from({ length: 5 }, (_, i) => ({ account: `acct-${i}`, balance: '1000', version: 2 })));
    // Version 1 moved into a schema of its own, under the same name, with what it had.
    const v1 = async () => Number((await db.pool.query('SELECT sum(balance) AS s FROM balances_v1.balances')).rows[0].s);
    expect(await v1()).toBe(50);

    // Live appends go to version 2 only; the old release gives version 1 up.
    await deposit(5);
    await waitFor('version 2 applies new events', async () => (await total()) === 5500);
    await waitFor('the old release stops running version 1', () => old.ownedProjections().length === 0);
    expect(await v1()).toBe(50);

    // A rebuild of the same code: version 3 beside version 2, then live.
    const rebuilt = await requestRebuild(db.pool, names, 'balances', 'auto');
    expect(rebuilt).toMatchObject({ version: 3, codeVersion: 2, schema: 'balances_v3', role: 'building' });
    await expect(requestRebuild(db.pool, names, 'balances', 'auto')).rejects.toThrow(VersionRequestError);
    await waitFor('version 3 live', async () => (await roles()).join() === '1:kept,2:kept,3:live');
    expect(await total()).toBe(5500);

    // Only kept versions can be dropped.
    await expect(dropVersion(db.pool, names, 'balances', 3)).rejects.toThrow(/version 3 is live/);
    await dropVersion(db.pool, names, 'balances', 2);
    expect((await db.pool.query(`SELECT to_regnamespace('balances_v2') AS s`)).rows[0].s).toBeNull();
    expect(await roles()).toEqual(['1:kept', '3:live']);

    // Back to version 2's code? Its build is gone; back to version 3's previous one is version 1, built by old code:
    // the new release cannot run it, so it waits (building) for the old release.
    await requestSwitch(db.pool, names, 'balances', 1);
    expect(await roles()).toEqual(['1:building', '3:live']);
    await old.stop();
    const oldAgain = await startRunner(db, { projections: [balances(1)] });
    await waitFor('version 1 live again', async () => (await roles()).join() === '1:live,3:kept');
    await waitFor('version 1 read through the names', async () => (await total()) === 55);
    expect((await readModel()).every((r) => r.version === 1)).toBe(true);
    await oldAgain.stop();
    await next.stop();
  });

  it('a batch of a version switched away from stops before its handler writes (BuildRetiredError)', async () => {
    const { db } = fixture;
    await deposit(5);
    fixture.runner = await startRunner(db, { projections: [balances(1)] });
    await waitFor('caught up', async () => (await total()) === 5);
    await db.pool.query(`UPDATE projection_builds SET role = 'kept' WHERE slot = 'balances'`);
    await deposit(1);
    await waitFor('the projector stops', () => fixture.runner!.ownedProjections().length === 0);
    expect(await total()).toBe(5);
    expect(new BuildRetiredError('balances', { role: 'kept', schema: null }).message).toMatch(/is kept now/);
  });
});
