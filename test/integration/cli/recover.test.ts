import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { EventStore, Runner } from '../../../src/index.js';
import { REPO, runCli } from '../../support/child-runner.js';
import { openStoreDatabase, waitFor, type TestDatabase } from '../../support/database.js';
import { readLog } from '../../support/position-log.js';
import { startRunner } from '../../support/runner.js';
import flaky from '../../fixtures/recovery-projections/flaky.js';

/**
 * retry, skip and dead-letters as an operator runs them: the CLI in a child process, the projection owned by a
 * running daemon (a Runner in this process) that is never restarted; and with no daemon, in the CLI's own process.
 */
const PROJECTIONS = path.join(REPO, 'test/fixtures/recovery-projections');
let db: TestDatabase;
let store: EventStore;
let daemon: Runner | undefined;
const env = () => ({ DATABASE_URL: db.url });
const cliArgs = (...args: string[]) => [...args, '--projections', PROJECTIONS];

const checkpoint = async () =>
  (await db.pool.query("SELECT position::int, state, last_error FROM projection_checkpoints WHERE name = 'flaky'")).rows[0];

/** A fresh database for each test, a broken handler, and the daemon stopped failed at position 3 of 5. */
beforeEach(async () => {
  ({ db, store } = await openStoreDatabase());
  for (let i = 1; i <= 5; i++) await store.append(`r-${i}`, [{ type: i === 3 ? 'Poison' : 'Fine', data: { i } }]);
  daemon = await startRunner(db, { projections: [flaky], handlerRetries: 0 });
  await waitFor('flaky failed', async () => (await checkpoint())?.state === 'failed');
  expect((await checkpoint()).position).toBe(2);
});
afterEach(async () => {
  await daemon?.stop();
  daemon = undefined;
  await db.drop();
});

const fixHandler = () => db.pool.query('INSERT INTO flaky_fixed VALUES (true) ON CONFLICT DO NOTHING');

describe('retry', () => {
  it('resumes a failed projection in the running daemon, without a restart, once the handler is fixed', async () => {
    const before = await runCli(cliArgs('retry', 'flaky'), env());
    expect(before.code).toBe(1);
    expect(before.stderr).toMatch(/flaky" failed again at position 3 \(Poison\): poisoned by event 3/);
    expect((await checkpoint()).state).toBe('failed');

    await fixHandler();
    const { code, stdout, stderr } = await runCli(cliArgs('retry', 'flaky'), env());
    expect(stderr).toMatch(/flaky is run by .+: the daemon carries out the retry/);
    expect(code).toBe(0);
    expect(stdout).toMatch(/retry flaky: resumed; checkpoint at \d+/);
    await waitFor('caught up', async () => (await checkpoint()).position === 5);
    expect((await readLog(db.pool, 'flaky')).map((r) => [r.position, r.applied])).toEqual([
      [1, 1],
      [2, 1],
      [3, 1],
      [4, 1],
      [5, 1],
    ]);
    expect(daemon!.ownedProjections()[0]!.state).toBe('running');
  });
});

describe('skip and dead letters', () => {
  it('skip dead-letters the stuck event and the daemon goes on; the dead letter is listed, then re-delivered exactly once', async () => {
    const unconfirmed = await runCli(cliArgs('skip', 'flaky'), env());
    expect(unconfirmed.code).toBe(2);
    expect(unconfirmed.stderr).toContain('pass --yes');

    const skipped = await runCli(cliArgs('skip', 'flaky', '--yes'), env());
    expect(skipped.code).toBe(0);
    expect(skipped.stdout).toMatch(/skip flaky: dead-lettered position 3, resumed/);
    await waitFor('past the poison', async () => (await checkpoint()).position === 5);
    expect((await checkpoint()).state).toBe('running');
    expect((await readLog(db.pool, 'flaky')).map((r) => r.position)).toEqual([1, 2, 4, 5]);
    const skippedCount = (await daemon!.metrics.deadLetters.get()).values.find((v) => v.labels.projection === 'flaky')?.value;
    expect(skippedCount).toBe(1);

    // A second skip: nothing is stuck any more.
    const again = await runCli(cliArgs('skip', 'flaky', '--yes'), env());
    expect(again.code).toBe(1);
    expect(again.stderr).toContain('is not failed');

    const listed = await runCli(['dead-letters', 'flaky', '--json'], env());
    expect(listed.code).toBe(0);
    expect(JSON.parse(listed.stdout)).toMatchObject([
      { position: 3, type: 'Poison', stream: 'r-3', error: 'poisoned by event 3', attempts: 1, reason: 'command', status: 'pending' },
    ]);
    const status = await runCli(['status', '--json'], env());
    expect(JSON.parse(status.stdout).projections).toMatchObject([{ name: 'flaky', deadLetters: 1 }]);

    // Re-delivery before the fix fails and leaves the dead letter pending.
    const tooSoon = await runCli(cliArgs('retry', 'flaky', '--dead-letters'), env());
    expect(tooSoon.code).toBe(1);
    expect(tooSoon.stderr).toMatch(/re-delivering dead letter \d+ \(position 3\) failed: poisoned by event 3/);

    await fixHandler();
    const redelivered = await runCli(cliArgs('retry', 'flaky', '--dead-letters'), env());
    expect(redelivered.code).toBe(0);
    expect(redelivered.stdout).toMatch(/retry flaky: re-delivered 1 dead letter, was not failed/);
    const twice = await runCli(cliArgs('retry', 'flaky', '--dead-letters'), env());
    expect(twice.code).toBe(0);
    expect(twice.stdout).toMatch(/re-delivered 0 dead letters/);
    expect((await readLog(db.pool, 'flaky')).map((r) => [r.position, r.applied])).toEqual([
      [1, 1],
      [2, 1],
      [4, 1],
      [5, 1],
      [3, 1],
    ]);
    const table = await runCli(['dead-letters', 'flaky'], env());
    expect(table.stdout).toMatch(/3\s+Poison\s+r-3@1\s+1\s+command\s+\S+\s+redelivered/);
    expect(table.stdout).toContain('none pending');
  });

  it('with no daemon owning the projection, skip runs in the CLI process and takes the projection to the head', async () => {
    await daemon!.stop();
    daemon = undefined;
    const { code, stdout, stderr } = await runCli(cliArgs('skip', 'flaky', '--yes', '--handler-retries', '0'), env());
    expect(stderr).toContain('no daemon runs flaky: skip in this process');
    expect(code).toBe(0);
    expect(stdout).toMatch(/skip flaky: dead-lettered position 3, resumed; checkpoint at 5 \(running\)/);
    expect((await readLog(db.pool, 'flaky')).map((r) => r.position)).toEqual([1, 2, 4, 5]);
    expect((await db.pool.query('SELECT global_position::int AS p FROM projection_dead_letters')).rows).toEqual([{ p: 3 }]);
  });
});
