import { describe, expect, it } from 'vitest';
import { VersionDependentsError, VersionSchemaTakenError } from '../../../src/index.js';
import { storeNames } from '../../../src/db/identifiers.js';
import { dropVersion, requestRebuild } from '../../../src/versions/builds-sql.js';
import { runCli } from '../../support/child-runner.js';
import { waitFor } from '../../support/database.js';
import { startRunner, useRunnerFixture } from '../../support/runner.js';
import { versionedBalances, versionRoles } from '../../support/versioned.js';

/**
 * Issue 26, item 2: a version's schema adopts a schema that is not the runner's, and `drop` destroys application data.
 * `CREATE SCHEMA IF NOT EXISTS "acct_v2"` took over an application schema of that name (the switch then published its
 * `invoices` as a view, `drop --version 2` deleted it), and `drop --version 1` cascaded into an application view in
 * `public` over version 1's table. A version's schema is created by the runner and recorded as its own; `drop`
 * removes only that, and refuses (listing them) objects outside it that depend on it unless told `--cascade`.
 */
const fixture = useRunnerFixture();
const names = storeNames();
const roles = () => versionRoles(fixture.db.pool, 'acct');
const invoices = async () => Number((await fixture.db.pool.query('SELECT count(*) AS n FROM acct_v2.invoices')).rows[0].n);
const relation = async (name: string) => (await fixture.db.pool.query('SELECT to_regclass($1)::text AS r', [name])).rows[0].r;

async function deposit(n: number): Promise<void> {
  for (let i = 0; i < n; i++) await fixture.store.append(`a-${i % 2}`, [{ type: 'E', data: {} }]);
}

/** Version 1 live, then version 2 live (version 1 kept, its table moved into acct_v1). */
async function twoVersions() {
  const { db } = fixture;
  await deposit(6);
  const old = await startRunner(db, { projections: [versionedBalances(1)] });
  await waitFor('v1 built', async () => (await roles()) === '1:live');
  const next = await startRunner(db, { projections: [versionedBalances(2)] });
  await waitFor('v2 live', async () => (await roles()) === '1:kept,2:live');
  await old.stop();
  return next;
}

describe("issue 26 item 2: a version's schema that is not the runner's", () => {
  it("an application schema named like the next version's stops the build: nothing adopted, nothing published", async () => {
    const { db } = fixture;
    await db.pool.query(`CREATE SCHEMA acct_v2; CREATE TABLE acct_v2.invoices (id int PRIMARY KEY, amount int)`);
    await db.pool.query(`INSERT INTO acct_v2.invoices SELECT g, g FROM generate_series(1, 5) g`);
    await deposit(6);
    const old = await startRunner(db, { projections: [versionedBalances(1)] });
    await waitFor('v1 built', async () => (await roles()) === '1:live');

    // The new release's start refuses, naming the schema; `rebuild` of the live code wants acct_v2 too.
    await expect(startRunner(db, { projections: [versionedBalances(2)] })).rejects.toThrow(VersionSchemaTakenError);
    await expect(requestRebuild(db.pool, names, 'acct', 'auto')).rejects.toThrow(/schema "acct_v2".*not created by the runner/);
    expect(await roles()).toBe('1:live');
    expect(await invoices()).toBe(5);
    expect(await relation('public.invoices')).toBeNull();
    await old.stop();
  });

  it("an application schema named where the first version's tables would move stops the build before it starts", async () => {
    const { db } = fixture;
    await db.pool.query(`CREATE SCHEMA acct_v1; CREATE TABLE acct_v1.audit (id int)`);
    await deposit(6);
    const old = await startRunner(db, { projections: [versionedBalances(1)] });
    await waitFor('v1 built', async () => (await roles()) === '1:live');
    await expect(startRunner(db, { projections: [versionedBalances(2)] })).rejects.toThrow(/schema "acct_v1"/);
    expect(await roles()).toBe('1:live');
    expect(await relation('acct_v1.balances')).toBeNull();
    expect(await relation('acct_v2.balances')).toBeNull();
    await old.stop();
  });

  it('`drop --version 1` refuses, listing it, when an application view depends on its table; `--cascade` drops both', async () => {
    const { db } = fixture;
    const next = await twoVersions();
    await db.pool.query(`CREATE VIEW report AS SELECT sum(balance) AS total FROM acct_v1.balances`);

    const refused = dropVersion(db.pool, names, 'acct', 1);
    await expect(refused).rejects.toThrow(VersionDependentsError);
    await expect(refused).rejects.toThrow(/view report/);
    expect(await roles()).toBe('1:kept,2:live');
    expect((await db.pool.query('SELECT total::int AS t FROM report')).rows[0].t).toBe(6);

    // The command says the same, and with --cascade says what it dropped.
    const cli = await runCli(['drop', 'acct', '--version', '1', '--yes'], { DATABASE_URL: db.url });
    expect(cli.code).toBe(1);
    expect(cli.stderr).toContain('view report');
    expect(await roles()).toBe('1:kept,2:live');
    const cascaded = await runCli(['drop', 'acct', '--version', '1', '--yes', '--cascade'], { DATABASE_URL: db.url });
    expect(cascaded.stderr).toBe('');
    expect(cascaded.code).toBe(0);
    expect(cascaded.stdout).toContain(
      'schema acct_v1 and everything in it (table acct_v1.balances), and outside it (--cascade): view report',
    );
    expect(await roles()).toBe('2:live');
    expect(await relation('public.report')).toBeNull();
    expect(await relation('acct_v1.balances')).toBeNull();
    await next.stop();
  }, 60_000);

  it("`drop` leaves a schema of the version's name that the runner did not create (an application's, made since)", async () => {
    const { db } = fixture;
    const next = await twoVersions();
    // Version 1's schema replaced by the application's own of the same name.
    await db.pool.query(`DROP SCHEMA acct_v1 CASCADE; CREATE SCHEMA acct_v1; CREATE TABLE acct_v1.invoices (id int)`);
    await db.pool.query(`INSERT INTO acct_v1.invoices VALUES (1), (2)`);
    const { dropped } = await dropVersion(db.pool, names, 'acct', 1);
    expect(dropped).toEqual({ kind: 'not-ours', schema: 'acct_v1' });
    expect(await roles()).toBe('2:live');
    expect(Number((await db.pool.query('SELECT count(*) AS n FROM acct_v1.invoices')).rows[0].n)).toBe(2);
    await next.stop();
  }, 60_000);

  it("`drop` of the runner's own schema with nothing depending on it removes it and says what it removed", async () => {
    const { db } = fixture;
    const next = await twoVersions();
    const { dropped } = await dropVersion(db.pool, names, 'acct', 1);
    expect(dropped).toEqual({ kind: 'ours', schema: 'acct_v1', objects: ['table acct_v1.balances'], dependents: [] });
    expect((await db.pool.query(`SELECT to_regnamespace('acct_v1') AS s`)).rows[0].s).toBeNull();
    await next.stop();
  }, 60_000);
});
