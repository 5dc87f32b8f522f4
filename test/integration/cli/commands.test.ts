import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { EventStore } from '../../../src/index.js';
import { createTestDatabase, openStoreDatabase, waitFor, type TestDatabase } from '../../support/database.js';
import { FIXTURE_PROJECTIONS, REPO, runCli, startDaemon } from '../../support/child-runner.js';
import { readLog } from '../../support/position-log.js';
import { freePort } from '../../../src/db/postgres-server.js';
import { migrations } from '../../../src/db/migrations.js';

let db: TestDatabase;
let store: EventStore;
beforeAll(async () => ({ db, store } = await openStoreDatabase()));
afterAll(() => db.drop());

const env = () => ({ DATABASE_URL: db.url });

describe('migrate', () => {
  it('is idempotent, also from two processes at once', async () => {
    const fresh = await createTestDatabase({ migrated: false });
    try {
      const [a, b] = await Promise.all([
        runCli(['migrate'], { DATABASE_URL: fresh.url }),
        runCli(['migrate'], { DATABASE_URL: fresh.url }),
      ]);
      expect([a.code, b.code, a.stderr + b.stderr]).toEqual([0, 0, '']);
      const again = await runCli(['migrate'], { DATABASE_URL: fresh.url });
      expect(again.code).toBe(0);
      const { rows } = await fresh.pool.query('SELECT version FROM events_migrations ORDER BY version');
      expect(rows.map((r) => r.version)).toEqual(migrations.map((m) => m.version).sort((a, b) => a - b));
    } finally {
      await fresh.drop();
    }
  });
});

describe('status --json', () => {
  it('reports head, high-water, projections with lag and owner, open gaps', async () => {
    for (let i = 0; i < 5; i++) await store.append(`st-${i}`, [{ type: 'E', data: {} }]);
    await db.pool.query(`
      INSERT INTO projection_checkpoints (name, position, state) VALUES ('alpha', 3, 'running'), ('beta', 5, 'failed');
      UPDATE projection_checkpoints SET last_error = '{"message":"boom","position":"6","type":"E"}' WHERE name = 'beta';
      UPDATE projection_high_water SET position = 5, head = 5;
      INSERT INTO projection_gaps (from_position, to_position, first_seen_at) VALUES (9, 10, now() - interval '3 seconds');`);
    const { code, stdout } = await runCli(['status', '--json'], env());
    expect(code).toBe(0);
    const report = JSON.parse(stdout);
    expect(report).toMatchObject({
      head: 5,
      highWater: 5,
      projections: [
        { name: 'alpha', state: 'stopped', position: 3, lagEvents: 2, lastError: null, owner: null },
        { name: 'beta', state: 'failed', position: 5, lagEvents: 0, lagSeconds: 0, lastError: { message: 'boom' }, owner: null },
      ],
      openGaps: [{ from: 9, to: 10 }],
    });
    expect(report.projections[0].lagSeconds).toBeGreaterThanOrEqual(0);
    expect(report.openGaps[0].ageSeconds).toBeGreaterThanOrEqual(3);
    const table = await runCli(['status'], env());
    expect(table.stdout).toMatch(/alpha\s+-\s+stopped\s+3\s+5\s+5\s+2/);
    expect(table.stdout).toContain('open gaps: 9..10');
    await db.pool.query('TRUNCATE projection_checkpoints, projection_gaps');
  });
});

describe('errors: one clear line, exit 1 (usage: 2)', () => {
  it.each([
    [
      'unknown projection',
      ['replay', 'nope', '--yes', '--projections', FIXTURE_PROJECTIONS],
      /unknown projection "nope" \(known: chaos_a, chaos_b\)/,
    ],
    [
      'module that throws at load',
      ['run', '--projections', `${REPO}/test/fixtures/bad-projections/throws`],
      /broken\.mjs: failed to load: this module is broken on purpose/,
    ],
    [
      'module without handle',
      ['run', '--projections', `${REPO}/test/fixtures/bad-projections/no-handle`],
      /projection "incomplete" has no handle/,
    ],
    ['duplicate names', ['run', '--projections', `${REPO}/test/fixtures/bad-projections/duplicate`], /duplicate projection name "twin"/],
    [
      'invalid duration',
      ['run', '--gap-timeout', 'soon'],
      /invalid --gap-timeout \(PROJECTION_RUNNER_GAP_TIMEOUT\): "soon" is not a duration/,
    ],
    ['invalid batch size', ['run', '--batch-size', '0'], /invalid --batch-size \(PROJECTION_RUNNER_BATCH_SIZE\)/],
    [
      'injection through the table name',
      ['status', '--table', 'events; drop table events'],
      /invalid --table \(PROJECTION_RUNNER_TABLE\): "events; drop table events" is not a valid identifier/,
    ],
    [
      'injection through the schema',
      ['run', '--schema', 'public"; drop schema public cascade; --'],
      /invalid --schema \(PROJECTION_RUNNER_SCHEMA\): .+ is not a valid identifier/,
    ],
    [
      'injection through the channel',
      ['run', '--channel', "events'); select pg_sleep(10); --"],
      /invalid --channel \(PROJECTION_RUNNER_CHANNEL\): .+ is not a valid identifier/,
    ],
  ])('%s', async (_label, args, message) => {
    const { code, stderr } = await runCli(args as string[], env());
    expect(stderr).toMatch(message as RegExp);
    expect(stderr.trim().split('\n')).toHaveLength(1);
    expect(code).toBe(1);
  });

  it('reads settings from PROJECTION_RUNNER_* variables and names them when invalid', async () => {
    const { code, stderr } = await runCli(['run', '--projections', FIXTURE_PROJECTIONS], {
      ...env(),
      PROJECTION_RUNNER_POLL_INTERVAL: '-5s',
    });
    expect(code).toBe(1);
    expect(stderr).toMatch(/invalid --poll-interval \(PROJECTION_RUNNER_POLL_INTERVAL\)/);
  });

  it('an unreachable database: host and port, no password', async () => {
    const port = await freePort();
    const url = `postgres://someone:hunter2secret@127.0.0.1:${port}/x`;
    const { code, stderr } = await runCli(['status'], { DATABASE_URL: url });
    expect(code).toBe(1);
    expect(stderr).toContain(`cannot reach PostgreSQL at 127.0.0.1:${port}/x`);
    expect(stderr).not.toContain('hunter2secret');
  });

  it('failed authentication exits at once, also for run, without the password', async () => {
    const url = db.url.replace(/:[^:@/]+@/, ':wrong-password-xyz@');
    for (const args of [['status'], ['run', '--projections', FIXTURE_PROJECTIONS, '--metrics-port', '0']]) {
      const { code, stderr } = await runCli(args, { DATABASE_URL: url }, 30_000);
      expect(code).toBe(1);
      expect(stderr).toMatch(/authentication failed for PostgreSQL at 127\.0\.0\.1:\d+\/t_/);
      expect(stderr).not.toContain('wrong-password-xyz');
    }
  });

  it('replay without a terminal and without --yes is a usage error', async () => {
    const { code, stderr } = await runCli(['replay', 'chaos_a', '--projections', FIXTURE_PROJECTIONS], env());
    expect(code).toBe(2);
    expect(stderr).toContain('pass --yes');
  });

  it('an unknown command or flag is a usage error', async () => {
    expect((await runCli(['frobnicate'], env())).code).toBe(2);
    expect((await runCli(['status', '--no-such-flag'], env())).code).toBe(2);
  });
});

describe('replay', () => {
  it('rebuilds in-process when no daemon runs: identical read model, checkpoint at head, a summary', async () => {
    for (let i = 0; i < 40; i++) await store.append(`r-${i % 7}`, [{ type: 'E', data: { i } }]);
    // Build the read model once with a daemon, then stop it.
    const daemon = startDaemon(db.url);
    const head = Number((await db.pool.query('SELECT max(global_position) AS m FROM events')).rows[0].m);
    await waitFor(
      'built',
      async () =>
        (await readLog(db.pool, 'chaos_a')).length > 0 &&
        Number((await db.pool.query("SELECT position FROM projection_checkpoints WHERE name = 'chaos_a'")).rows[0]?.position) === head,
    );
    daemon.child.kill('SIGTERM');
    expect(await daemon.exited).toBe(0);
    const before = (await readLog(db.pool, 'chaos_a')).map((r) => [r.position, r.applied]);

    const { code, stdout, stderr } = await runCli(['replay', 'chaos_a', '--yes', '--projections', FIXTURE_PROJECTIONS], env());
    expect(stderr).toContain('rebuilding in this process');
    expect(code).toBe(0);
    expect(stdout).toMatch(new RegExp(`replayed chaos_a: ${before.length} events in [\\d.]+s \\(\\d+ events/s\\), checkpoint at ${head}`));
    expect((await readLog(db.pool, 'chaos_a')).map((r) => [r.position, r.applied])).toEqual(before);
  });

  it('is done by the daemon that owns the projection, while its other projection keeps advancing', async () => {
    const daemon = startDaemon(db.url);
    try {
      await waitFor('daemon owns both', async () => (await runCli(['status', '--json'], env())).stdout.includes('"owner": "'));
      const writing = new AbortController();
      const writer = (async () => {
        let i = 0;
        while (!writing.signal.aborted) {
          await store.append(`live-${i++ % 5}`, [{ type: 'E', data: {} }]);
          await new Promise((r) => setTimeout(r, 20));
        }
      })();
      const bBefore = (await readLog(db.pool, 'chaos_b')).length;
      const { code, stdout, stderr } = await runCli(['replay', 'chaos_a', '--yes', '--projections', FIXTURE_PROJECTIONS], env());
      const bAfter = (await readLog(db.pool, 'chaos_b')).length;
      writing.abort();
      await writer;
      expect(stderr).toMatch(/chaos_a is run by .+: the daemon rebuilds it/);
      expect(code).toBe(0);
      expect(stdout).toMatch(/replayed chaos_a: \d+ events/);
      expect(bAfter).toBeGreaterThan(bBefore);
      const { rows } = await db.pool.query('SELECT status FROM projection_replays ORDER BY id DESC LIMIT 1');
      expect(rows[0].status).toBe('done');
      // Exactly once after the rebuild too.
      await waitFor('caught up', async () => {
        const h = (await db.pool.query('SELECT max(global_position)::int AS m FROM events')).rows[0].m;
        return (await db.pool.query("SELECT position::int AS p FROM projection_checkpoints WHERE name = 'chaos_a'")).rows[0].p === h;
      });
      const log = await readLog(db.pool, 'chaos_a');
      expect(log.every((r) => r.applied === 1)).toBe(true);
      expect(log.length).toBe((await db.pool.query('SELECT count(*)::int AS n FROM events')).rows[0].n);
    } finally {
      daemon.child.kill('SIGTERM');
      await daemon.exited;
    }
  });

  it('refuses a second replay of the same projection while one is in progress', async () => {
    await db.pool.query("INSERT INTO projection_replays (projection, status) VALUES ('chaos_b', 'running')");
    const { code, stderr } = await runCli(['replay', 'chaos_b', '--yes', '--projections', FIXTURE_PROJECTIONS], env());
    expect(code).toBe(1);
    expect(stderr).toContain('a replay of "chaos_b" is already in progress');
    await db.pool.query("UPDATE projection_replays SET status = 'failed' WHERE projection = 'chaos_b'");
  });
});
