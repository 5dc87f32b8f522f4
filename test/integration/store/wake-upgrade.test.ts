import { describe, expect, it } from 'vitest';
import { EventStore } from '../../../src/index.js';
import { FIXTURE_PROJECTIONS, runCli, startDaemon } from '../../support/child-runner.js';
import { waitFor } from '../../support/database.js';
import { committedPositions, expectExactlyOnceInOrder, waitUntilAllApplied } from '../../support/position-log.js';
import { usePreviousRelease } from '../../support/previous-release.js';

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

for (const release of PREVIOUS_RELEASES) {
  describe(`migrate under a running daemon of the release before ${release.before}`, () => {
    const t = usePreviousRelease(release.commit, 'the upgrade test');
    /** The previous release's CLI, as its users ran it. */
    const previousCli = (args: string[]) => t.release.cli(args, t.db.url);

    it.skipIf(!t.release.available)('loses nothing and applies nothing twice while writers go on', { timeout: 240_000 }, async () => {
      const migrated = previousCli(['migrate']);
      expect(await migrated.exited, migrated.output.join('')).toBe(0);
      const old = previousCli(['run', '--projections', FIXTURE_PROJECTIONS, '--metrics-port', '0', '--poll-interval', '200ms']);
      const daemons: Array<{ child: { kill(signal: NodeJS.Signals): unknown }; exited: Promise<number | null> }> = [old];
      let writing = true;
      let writers: Array<Promise<void>> = [];
      try {
        const store = new EventStore(t.db.pool);
        let written = 0;
        const writer = async (id: number) => {
          for (let i = 0; writing; i++) {
            if (i % 2 === 0) await store.append(`w${id}-${i}`, [{ type: 'E', data: { i } }]);
            else
              await t.db.pool.query(`INSERT INTO events (stream_name, stream_position, type, data) VALUES ($1, 1, 'E', '{}')`, [
                `w${id}-${i}`,
              ]);
            written++;
          }
        };
        writers = [1, 2, 3, 4].map(writer);
        await waitFor(
          'the old daemon applying',
          async () => (await t.db.pool.query('SELECT 1 FROM projection_checkpoints WHERE position > 0')).rowCount! > 0,
          60_000,
        );

        // This release's migrate, writers and the old daemon going on.
        const before = written;
        const upgrade = await runCli(['migrate'], { DATABASE_URL: t.db.url });
        expect(upgrade.code, upgrade.stderr).toBe(0);
        const { rows } = await t.db.pool.query(
          `SELECT bool_or(version = 10) AND bool_or(version = 12) AS flagged, pg_sequence_last_value('projection_wake_flag') AS flag FROM events_migrations`,
        );
        expect(rows[0].flagged).toBe(true);
        // Before the flag: created at 0, never set. After it: whatever the old leader set (it follows or sleeps).
        if (release.before === 'the wake-up flag') expect(rows[0].flag).toBeNull();
        await waitFor('writes after the upgrade', () => written > before + 50, 60_000);

        // This release's daemon joins; the old one stops (graceful), writers still going.
        const current = startDaemon(t.db.url);
        daemons.push(current);
        await waitFor('writes with both daemons', () => written > before + 150, 60_000);
        old.child.kill('SIGTERM');
        expect(await old.exited).toBe(0);
        await waitFor('writes after the old daemon stopped', () => written > before + 250, 60_000);
        writing = false;
        await Promise.all(writers);

        const committed = await committedPositions(t.db.pool);
        await waitUntilAllApplied(t.db.pool, committed, ['chaos_a', 'chaos_b'], 120_000).catch((error: unknown) => {
          throw new Error(`${String(error)}\nthe daemon said:\n${current.output.join('').slice(-4000)}`);
        });
        for (const name of ['chaos_a', 'chaos_b']) await expectExactlyOnceInOrder(t.db.pool, name, committed);
      } finally {
        writing = false;
        await Promise.allSettled(writers);
        for (const d of daemons) d.child.kill('SIGKILL');
        await Promise.all(daemons.map((d) => d.exited));
      }
    });
  });
}
