import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { storeNames } from '../../../src/db/identifiers.js';
import { readBuilds } from '../../../src/versions/builds-sql.js';
import { cli, REPO, runCli, startDaemon, useDaemonFixture } from '../../support/child-runner.js';
import { waitFor } from '../../support/database.js';
import { positionLog, readLog } from '../../support/position-log.js';
import { startRunner } from '../../support/runner.js';
import { readStatus } from '../../../src/cli/status.js';

/**
 * Issue 26 item 5, commands that never end, with side effects: a command that follows a request either serves it or
 * says, at once or within --request-timeout, that nothing can serve it and why (exit 1), and leaves no pending request
 * behind; it does only what it says (a replay never builds or switches another version).
 */
const fixture = useDaemonFixture();
const names = storeNames();
const VERSIONED = path.join(REPO, 'test/fixtures/versioned-projections');
const FIXTURES = path.join(REPO, 'test/fixtures/projections');
const versioned = (version: number) => ({ ...positionLog('versioned'), version });
const roles = async () => (await readBuilds(fixture.db.pool, names, 'versioned')).map((b) => `${b.version}:${b.role}`).join();
const rows = async (table: 'projection_replays' | 'projection_commands') =>
  (await fixture.db.pool.query(`SELECT projection, status FROM ${table} ORDER BY id`)).rows;
const checkpoint = async (slot: string) =>
  Number((await fixture.db.pool.query('SELECT position FROM projection_checkpoints WHERE name = $1', [slot])).rows[0]?.position ?? -1);
/** Bounded so that a never-ending command fails the test instead of hanging it; generous, for a loaded machine. */
const BOUND_MS = 90_000;

/** `events` more events, each on a stream of its own. */
async function seed(events: number) {
  await fixture.db.pool.query(
    `INSERT INTO events (stream_name, stream_position, type, data)
     SELECT 's-' || (g + (SELECT count(*) FROM events)), 1, 'E', '{}' FROM generate_series(1, ${events}) AS g`,
  );
}

/** Version 1 built and live, no daemon running it any more. */
async function versionOneBuilt(): Promise<void> {
  await seed(20);
  const old = await startRunner(fixture.db, { projections: [versioned(1)] });
  await waitFor('v1 built', async () => (await checkpoint('versioned')) === 20, 60_000);
  await old.stop();
}

describe('issue 26 item 5: commands that never end, with side effects', () => {
  it('`replay` with no daemon and a newer module version in --projections: refused at once, no build, no switch, no request', async () => {
    await versionOneBuilt();
    const result = await runCli(
      ['replay', 'versioned', '--yes', '--projections', VERSIONED],
      { DATABASE_URL: fixture.db.url, LOG_VERSION: '2' },
      BOUND_MS,
    );
    expect(result.stderr).toMatch(
      /--projections has version 2, .*a runner here would build version 2 beside the live one and switch to it/,
    );
    expect(result.stderr).toMatch(/nothing was changed/);
    expect(result.code).toBe(1);
    expect(await roles()).toBe('1:live');
    expect(await rows('projection_replays')).toEqual([]);
    expect((await readLog(fixture.db.pool, 'versioned')).length).toBe(20);
  }, 180_000);

  it('`retry --version N` on a kept version: refused at once (nothing runs a kept version), no request left', async () => {
    await versionOneBuilt();
    const next = await startRunner(fixture.db, { projections: [versioned(2)] });
    try {
      await waitFor('v2 live', async () => (await roles()) === '1:kept,2:live', 60_000);
      // A daemon runs the projection (version 2), none runs the kept version 1, whichever code the command has.
      for (const code of ['2', '1']) {
        const result = await runCli(
          ['retry', 'versioned', '--version', '1', '--projections', VERSIONED],
          { DATABASE_URL: fixture.db.url, LOG_VERSION: code },
          BOUND_MS,
        );
        expect(result.stderr).toMatch(/version 1 is kept/);
        expect(result.code).toBe(1);
        expect(await rows('projection_commands')).toEqual([]);
      }
    } finally {
      await next.stop();
    }
  }, 240_000);

  it('`switch --version N` that no running instance has the code for: withdrawn after --request-timeout, the version kept again', async () => {
    await versionOneBuilt();
    const next = await startRunner(fixture.db, { projections: [versioned(2)] });
    try {
      await waitFor('v2 live', async () => (await roles()) === '1:kept,2:live', 60_000);
      const target = async () => (await readBuilds(fixture.db.pool, names, 'versioned')).find((b) => b.version === 1)!.target;
      const before = await target();
      await seed(5); // H moves on: a switch back would take the new H as its target
      await waitFor('v2 at the head', async () => (await checkpoint('versioned@v2')) === 25, 60_000);
      // The running instance has module version 2 only: nothing takes version 1 up.
      const result = await runCli(
        ['switch', 'versioned', '--version', '1', '--yes', '--request-timeout', '2s', '--projections', VERSIONED],
        { DATABASE_URL: fixture.db.url, LOG_VERSION: '1' },
        BOUND_MS,
      );
      expect(result.stderr).toMatch(/not taken up within 2s \(--request-timeout\).*the request was withdrawn/);
      expect(result.code).toBe(1);
      expect(await roles()).toBe('1:kept,2:live');
      expect(await target()).toBe(before);
    } finally {
      await next.stop();
    }
  }, 180_000);

  it('a daemon that owns the projection but never takes the request up: withdrawn after --request-timeout, exit 1, never carried out later', async () => {
    await seed(20);
    const daemon = startDaemon(fixture.db.url, ['--projections', FIXTURES]);
    fixture.daemons.push(daemon);
    await waitFor(
      'the daemon owns chaos_a at the head',
      async () => {
        const p = (await readStatus(fixture.db.pool, names)).projections.find((s) => s.name === 'chaos_a');
        return p?.owner && p.position === 20;
      },
      60_000,
    );
    daemon.child.kill('SIGSTOP'); // its leases stay held, it answers nothing
    try {
      const replay = await runCli(
        ['replay', 'chaos_a', '--yes', '--request-timeout', '2s', '--projections', FIXTURES],
        { DATABASE_URL: fixture.db.url },
        BOUND_MS,
      );
      expect(replay.stderr).toMatch(/not taken up within 2s/);
      expect(replay.code).toBe(1);
      const retry = await runCli(
        ['retry', 'chaos_a', '--request-timeout', '2s', '--projections', FIXTURES],
        { DATABASE_URL: fixture.db.url },
        BOUND_MS,
      );
      expect(retry.stderr).toMatch(/not taken up within 2s/);
      expect(retry.code).toBe(1);
      expect(await rows('projection_replays')).toEqual([{ projection: 'chaos_a', status: 'failed' }]);
      expect(await rows('projection_commands')).toEqual([{ projection: 'chaos_a', status: 'failed' }]);
    } finally {
      daemon.child.kill('SIGCONT');
    }
    // Awake again, the daemon carries on without replaying: every event applied once, the checkpoint where it was.
    await seed(1);
    await waitFor('the daemon applies the next event', async () => (await checkpoint('chaos_a')) === 21, 60_000);
    expect((await readLog(fixture.db.pool, 'chaos_a')).map((r) => r.applied)).toEqual(new Array(21).fill(1));
    expect(await rows('projection_replays')).toEqual([{ projection: 'chaos_a', status: 'failed' }]);
  }, 240_000);

  it('a command interrupted while it waits (SIGTERM, SIGINT) withdraws its request', async () => {
    await seed(5);
    const daemon = startDaemon(fixture.db.url, ['--projections', FIXTURES]);
    fixture.daemons.push(daemon);
    await waitFor(
      'the daemon owns chaos_a',
      async () => (await readStatus(fixture.db.pool, names)).projections.find((s) => s.name === 'chaos_a')?.owner,
      60_000,
    );
    daemon.child.kill('SIGSTOP');
    try {
      for (const signal of ['SIGTERM', 'SIGINT'] as const) {
        const child = cli(['retry', 'chaos_a', '--projections', FIXTURES], { DATABASE_URL: fixture.db.url });
        let stderr = '';
        child.stderr!.on('data', (d) => (stderr += d));
        const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
        await waitFor('the request made', async () => (await rows('projection_commands')).some((r) => r.status === 'pending'), 60_000);
        child.kill(signal);
        expect(await exited).toBe(1);
        expect(stderr).toMatch(new RegExp(`interrupted \\(${signal}\\): the request was withdrawn`));
        expect((await rows('projection_commands')).map((r) => r.status)).not.toContain('pending');
      }
    } finally {
      daemon.child.kill('SIGCONT');
    }
  }, 240_000);
});
