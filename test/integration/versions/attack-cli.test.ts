import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { storeNames } from '../../../src/db/identifiers.js';
import { readBuilds } from '../../../src/versions/builds-sql.js';
import { REPO, runCli } from '../../support/child-runner.js';
import { waitFor } from '../../support/database.js';
import { positionLog } from '../../support/position-log.js';
import { startRunner, useRunnerFixture } from '../../support/runner.js';

/**
 * Attack: refusals of `rebuild` and `switch` must change nothing. Both commit their request (a build row, a role
 * change) first and only then find that the code given with --projections cannot build it and no daemon runs it
 * (acting() in src/cli/versions.ts): refused, but changed.
 */
const fixture = useRunnerFixture();
const names = storeNames();
const VERSIONED = path.join(REPO, 'test/fixtures/versioned-projections');
const versioned = (version: number) => ({ ...positionLog('versioned'), version });
const builds = async () =>
  (await readBuilds(fixture.db.pool, names, 'versioned')).map((b) => `${b.version}:${b.role}:${b.switchMode}`).join();

describe('attack: refused version requests change nothing', () => {
  it('`rebuild` refused for code of another module version leaves no build behind', async () => {
    const { db, store } = fixture;
    await store.append('s', [{ type: 'E', data: {} }]);
    const old = await startRunner(db, { projections: [versioned(1)] });
    await waitFor('v1 built', async () => (await builds()) === '1:live:auto');
    await old.stop(); // no daemon runs it now
    const before = await builds();
    // The operator runs the command with the new release's code (module version 2).
    const result = await runCli(['rebuild', 'versioned', '--projections', VERSIONED], { DATABASE_URL: db.url, LOG_VERSION: '2' });
    expect(result.code).toBe(1);
    expect(result.stderr).toContain('is built by the code of module version 1');
    expect(await builds()).toBe(before);
  }, 60_000);

  it('`switch --version 1` refused for code of another module version leaves the kept version kept', async () => {
    const { db, store } = fixture;
    await store.append('s', [{ type: 'E', data: {} }]);
    const old = await startRunner(db, { projections: [versioned(1)] });
    await waitFor('v1 built', async () => (await builds()) === '1:live:auto');
    const next = await startRunner(db, { projections: [versioned(2)] });
    await waitFor('v2 live', async () => (await builds()) === '1:kept:auto,2:live:auto');
    await next.stop();
    await old.stop();
    const before = await builds();
    const result = await runCli(['switch', 'versioned', '--version', '1', '--projections', VERSIONED], {
      DATABASE_URL: db.url,
      LOG_VERSION: '2',
    });
    expect(result.code).toBe(1);
    expect(result.stderr).toContain('is built by the code of module version 1');
    expect(await builds()).toBe(before);
  }, 60_000);
});
