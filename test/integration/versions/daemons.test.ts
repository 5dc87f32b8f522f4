import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { readStatus } from '../../../src/cli/status.js';
import { storeNames } from '../../../src/db/identifiers.js';
import { EventStore } from '../../../src/index.js';
import { readBuilds } from '../../../src/versions/builds-sql.js';
import { REPO, runCli, startDaemon, useDaemonFixture } from '../../support/child-runner.js';
import { waitFor } from '../../support/database.js';
import { committedPositions, expectExactlyOnceInOrder } from '../../support/position-log.js';

/**
 * Versions across daemon processes: an old release (version 1 of the module) and a new one (version 2) side by side,
 * the instance rebuilding SIGKILLed mid-way, the operator's rebuild/switch/drop commands.
 */
const fixture = useDaemonFixture();
const names = storeNames();
const VERSIONED = path.join(REPO, 'test/fixtures/versioned-projections');
const ARGS = ['--projections', VERSIONED, '--batch-size', '50'];
/** The commands take no daemon tuning (--batch-size is `run`'s). */
const CLI_ARGS = ['--projections', VERSIONED];

async function seed(events: number) {
  await fixture.db.pool.query(
    `INSERT INTO events (stream_name, stream_position, type, data)
     SELECT 's-' || (g % 50), g / 50 + 1, 'E', '{}' FROM generate_series(0, ${events - 1}) AS g`,
  );
}

function daemon(version: number) {
  const d = startDaemon(fixture.db.url, ARGS, { LOG_VERSION: String(version) });
  fixture.daemons.push(d);
  return d;
}

const roles = async () => (await readBuilds(fixture.db.pool, names, 'versioned')).map((b) => `${b.version}:${b.role}`).join();
const checkpoint = async (slot: string) =>
  Number((await fixture.db.pool.query('SELECT position FROM projection_checkpoints WHERE name = $1', [slot])).rows[0]?.position ?? -1);
const head = async () => Number((await fixture.db.pool.query('SELECT max(global_position) AS p FROM events')).rows[0].p);

describe('versions across daemon processes', () => {
  it('old and new releases side by side; the instance rebuilding SIGKILLed, another finishes exactly once; old dropped', async () => {
    const { db } = fixture;
    await seed(20_000);
    const old = daemon(1);
    await waitFor('version 1 built by the old release', async () => (await checkpoint('versioned')) === (await head()), 120_000);

    const next = [daemon(2), daemon(2)];
    await waitFor('version 2 rebuilding', async () => (await checkpoint('versioned@v2')) > 2_000, 60_000);
    const owner = await waitFor(
      'the owner of version 2',
      async () => (await readStatus(db.pool, names)).projections.find((p) => p.name === 'versioned@v2' && p.owner)?.owner,
    );
    const victim = next.find((d) => owner.endsWith(`/${d.child.pid}`))!;
    expect(victim).toBeDefined();
    victim.child.kill('SIGKILL');
    await victim.exited;

    // Live appends meanwhile (one every few milliseconds), until the switch.
    const store = new EventStore(db.pool);
    let appended = 0;
    const deadline = Date.now() + 150_000;
    while ((await roles()) !== '1:kept,2:live') {
      await store.append(`live-${appended % 3}`, [{ type: 'E', data: {} }]);
      appended++;
      await new Promise((r) => setTimeout(r, 5));
      if (Date.now() > deadline) {
        const status = (await readStatus(db.pool, names)).projections.map((p) => `${p.name} ${p.state} ${p.position} ${p.owner}`);
        throw new Error(`no switch after ${appended} appends: ${await roles()} ${JSON.stringify(status)} head ${await head()}`);
      }
    }
    await store.append('live-last', [{ type: 'E', data: {} }]);
    const committed = await committedPositions(db.pool);
    await waitFor('version 2 has every event', async () => (await checkpoint('versioned@v2')) === committed.at(-1), 60_000);
    // log_versioned is the application's name: a view over version 2's table now.
    await expectExactlyOnceInOrder(db.pool, 'versioned', committed);
    expect((await db.pool.query(`SELECT count(*)::int AS n FROM versioned_v1.log_versioned`)).rows[0].n).toBeLessThan(committed.length);

    old.child.kill('SIGTERM');
    expect(await old.exited).toBe(0);
    const dropped = await runCli(['drop', 'versioned', '--version', '1', '--yes'], { DATABASE_URL: db.url });
    expect(dropped).toMatchObject({
      code: 0,
      stdout:
        'dropped version 1 of versioned: schema versioned_v1 and everything in it (sequence versioned_v1.log_versioned_seq_seq, table versioned_v1.log_versioned); its checkpoint and bookkeeping\n',
    });
    expect((await db.pool.query(`SELECT to_regnamespace('versioned_v1') AS s`)).rows[0].s).toBeNull();
    expect(await roles()).toBe('2:live');
  }, 240_000);

  it('rebuild --switch manual waits for `switch`; status shows it rebuilding; drop refuses the live version', async () => {
    const { db } = fixture;
    await seed(2_000);
    daemon(1);
    await waitFor('version 1 built', async () => (await checkpoint('versioned')) === 2_000, 60_000);
    const env = { DATABASE_URL: db.url, LOG_VERSION: '1' };

    const rebuilt = await runCli(['rebuild', 'versioned', '--switch', 'manual', ...CLI_ARGS], env);
    expect(rebuilt.stdout).toBe(
      'versioned: version 2 has caught up (checkpoint 2000); `projection-runner switch versioned` makes it live\n',
    );
    expect(rebuilt.stderr).toContain('building version 2 of versioned in schema versioned_v2 beside the live version');
    const status = JSON.parse((await runCli(['status', '--json'], env)).stdout);
    expect(status.projections).toMatchObject([
      { name: 'versioned', projection: 'versioned', version: 1, role: 'live', state: 'running' },
      { name: 'versioned@v2', projection: 'versioned', version: 2, role: 'building', state: 'rebuilding', position: 2000 },
    ]);
    expect(await roles()).toBe('1:live,2:building');

    const switched = await runCli(['switch', 'versioned', ...CLI_ARGS], env);
    expect(switched.code).toBe(0);
    expect(switched.stdout).toMatch(/^versioned: version 2 is live \(checkpoint 2000; 0 events applied in [\d.]+s, 0 events\/s\)\n$/);
    expect(await roles()).toBe('1:kept,2:live');

    const refused = await runCli(['drop', 'versioned', '--version', '2', '--yes'], env);
    expect(refused).toMatchObject({
      code: 1,
      stderr: 'projection-runner: versioned: version 2 is live: only a kept version can be dropped\n',
    });
    const unknown = await runCli(['switch', 'versioned', '--version', '7', ...CLI_ARGS], env);
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toContain('there is no version 7 (versions: 1 kept, 2 live)');
  }, 180_000);
});
