import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EventStore } from '../../../src/index.js';
import { FIXTURE_PROJECTIONS, REPO, runCli, startDaemon } from '../../support/child-runner.js';
import { createTestDatabase, waitFor, type TestDatabase } from '../../support/database.js';
import { committedPositions, expectExactlyOnceInOrder, waitUntilAllApplied } from '../../support/position-log.js';

/**
 * Upgrading the wake-up path without an outage: a store migrated by an earlier release, that release's daemon
 * running, writers going on (events_append and plain INSERTs); this release's `migrate` runs in the middle of it; then
 * this release's daemon joins and the old one stops. Nothing lost, nothing applied twice. Two earlier releases: the
 * one before the wake-up flag (migration 10; its daemon knows no flag and wakes on its poll) and the one that read the
 * flag in the trigger's function (before migration 12; its daemon sets the flag, which the new trigger's WHEN reads).
 * Each is a commit taken from git (a shallow clone without it skips, loudly).
 */
const PREVIOUS_RELEASES = [
  { commit: '2270b0047c3b1b5309ede97a305af8924506fd0f', before: 'the wake-up flag' },
  { commit: '272cb67041dd7d328c807b5a849f86fd6ebadc6c', before: "the flag in the trigger's WHEN" },
];

const hasCommit = (commit: string) => {
  try {
    execFileSync('git', ['-C', REPO, 'cat-file', '-e', `${commit}^{commit}`], { stdio: 'ignore' });
    return true;
  } catch {
    console.warn(`SKIPPED: the upgrade test needs commit ${commit} (an earlier release) in the clone's history`);
    return false;
  }
};

const TSX_LOADER = pathToFileURL(path.join(REPO, 'node_modules/tsx/dist/loader.mjs')).href;
for (const release of PREVIOUS_RELEASES) {
  const hasPrevious = hasCommit(release.commit);
  let previous: string;
  let db: TestDatabase;

  /** The previous release's CLI, as its users ran it. */
  function previousCli(args: string[]) {
    const child = spawn(process.execPath, ['--import', TSX_LOADER, path.join(previous, 'src/cli/main.ts'), ...args], {
      cwd: previous,
      env: { ...process.env, PROJECTION_RUNNER_LOG_LEVEL: 'warn', DATABASE_URL: db.url },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const output: string[] = [];
    child.stdout.on('data', (d) => output.push(String(d)));
    child.stderr.on('data', (d) => output.push(String(d)));
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    return { child, output, exited };
  }

  describe.skipIf(!hasPrevious)(`migrate under a running daemon of the release before ${release.before}`, () => {
    beforeAll(async () => {
      if (!hasPrevious) return;
      previous = mkdtempSync(path.join(tmpdir(), 'previous-release-'));
      execFileSync('sh', ['-c', `git -C "${REPO}" archive ${release.commit} src package.json | tar -x -C "${previous}"`]);
      symlinkSync(path.join(REPO, 'node_modules'), path.join(previous, 'node_modules'));
      db = await createTestDatabase({ migrated: false });
    });
    afterAll(async () => {
      await db?.drop();
      if (previous) rmSync(previous, { recursive: true, force: true });
    });

    it('loses nothing and applies nothing twice while writers go on', { timeout: 240_000 }, async () => {
      const migrated = previousCli(['migrate']);
      expect(await migrated.exited, migrated.output.join('')).toBe(0);
      const old = previousCli(['run', '--projections', FIXTURE_PROJECTIONS, '--metrics-port', '0', '--poll-interval', '200ms']);
      const daemons: Array<{ child: { kill(signal: NodeJS.Signals): unknown }; exited: Promise<number | null> }> = [old];
      let writing = true;
      let writers: Array<Promise<void>> = [];
      try {
        const store = new EventStore(db.pool);
        let written = 0;
        const writer = async (id: number) => {
          for (let i = 0; writing; i++) {
            if (i % 2 === 0) await store.append(`w${id}-${i}`, [{ type: 'E', data: { i } }]);
            else
              await db.pool.query(`INSERT INTO events (stream_name, stream_position, type, data) VALUES ($1, 1, 'E', '{}')`, [
                `w${id}-${i}`,
              ]);
            written++;
          }
        };
        writers = [1, 2, 3, 4].map(writer);
        await waitFor(
          'the old daemon applying',
          async () => (await db.pool.query('SELECT 1 FROM projection_checkpoints WHERE position > 0')).rowCount! > 0,
          60_000,
        );

        // This release's migrate, writers and the old daemon going on.
        const before = written;
        const upgrade = await runCli(['migrate'], { DATABASE_URL: db.url });
        expect(upgrade.code, upgrade.stderr).toBe(0);
        const { rows } = await db.pool.query(
          `SELECT bool_or(version = 10) AND bool_or(version = 12) AS flagged, pg_sequence_last_value('projection_wake_flag') AS flag FROM events_migrations`,
        );
        expect(rows[0].flagged).toBe(true);
        // Before the flag: created at 0, never set. After it: whatever the old leader set (it follows or sleeps).
        if (release.before === 'the wake-up flag') expect(rows[0].flag).toBeNull();
        await waitFor('writes after the upgrade', () => written > before + 50, 60_000);

        // This release's daemon joins; the old one stops (graceful), writers still going.
        const current = startDaemon(db.url);
        daemons.push(current);
        await waitFor('writes with both daemons', () => written > before + 150, 60_000);
        old.child.kill('SIGTERM');
        expect(await old.exited).toBe(0);
        await waitFor('writes after the old daemon stopped', () => written > before + 250, 60_000);
        writing = false;
        await Promise.all(writers);

        const committed = await committedPositions(db.pool);
        await waitUntilAllApplied(db.pool, committed, ['chaos_a', 'chaos_b'], 120_000).catch((error: unknown) => {
          throw new Error(`${String(error)}\nthe daemon said:\n${current.output.join('').slice(-4000)}`);
        });
        for (const name of ['chaos_a', 'chaos_b']) await expectExactlyOnceInOrder(db.pool, name, committed);
      } finally {
        writing = false;
        await Promise.allSettled(writers);
        for (const d of daemons) d.child.kill('SIGKILL');
        await Promise.all(daemons.map((d) => d.exited));
      }
    });
  });
}
