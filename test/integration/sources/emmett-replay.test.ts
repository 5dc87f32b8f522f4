import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Runner, RunnerOptions } from '../../../src/index.js';
import { createTestDatabase, type TestDatabase } from '../../support/database.js';
import { appendInChildProcess } from '../../support/foreign/emmett-process.js';
import { DAEMON_LOGS } from '../../support/foreign/instances.js';
import { expectRebuiltExactlyOnce, lastApplication, replayRequests, replayWithCli } from '../../support/foreign/replay.js';
import { positionsIn } from '../../support/foreign/workload.js';
import { expectExactlyOnceInOrder, positionLog, waitUntilAllApplied } from '../../support/position-log.js';
import { startRunner } from '../../support/runner.js';

/**
 * Replay on the real Emmett store (0.42.0), written by its own appendToStream in processes of their own: this file
 * never loads Emmett, so its runner reads under pg's default type parsers, the CLI's in a process of its own.
 */
let db: TestDatabase;
let runner: Runner | undefined;
beforeAll(async () => {
  db = await createTestDatabase({ migrated: false });
});
afterAll(async () => {
  await runner?.stop();
  await db.drop();
});

const SOURCE = { source: 'emmett', channel: 'emmett' } as const;
const start = () =>
  startRunner(db, {
    ...(SOURCE as Partial<RunnerOptions>),
    projections: DAEMON_LOGS.map((name) => positionLog(name)),
    gapEvidence: 'auto',
    gapTimeoutMs: 1_500,
    batchSize: 50,
  });
const committed = () => positionsIn(db.pool, 'emt_messages', 'global_position');

describe('--source emmett: replay', () => {
  it('replay NAME with no daemon running rebuilds the projection in the CLI, exactly once, while appenders append', async () => {
    expect(await Promise.all([appendInChildProcess(db.url, 'shop0', 500), appendInChildProcess(db.url, 'shop1', 500)])).toEqual([
      'done 500',
      'done 500',
    ]);
    runner = await start();
    expect(await appendInChildProcess(db.url, 'shop2', 500)).toBe('done 500');
    const built = await committed();
    expect(built).toHaveLength(1_500);
    await waitUntilAllApplied(db.pool, built, DAEMON_LOGS, 30_000);
    for (const name of DAEMON_LOGS) await expectExactlyOnceInOrder(db.pool, name, built);
    const lastBefore = await lastApplication(db, 'chaos_a');
    await runner.stop();
    runner = undefined;

    // Nobody owns chaos_a: the CLI rebuilds it in its own process, up to the head at its reset, while Emmett appends.
    const appending = appendInChildProcess(db.url, 'shop3', 2_000);
    const result = await replayWithCli(db, 'chaos_a', SOURCE);
    expect(result.code, result.stderr).toBe(0);
    expect(result.stderr).toMatch(/no daemon runs chaos_a: rebuilding in this process/);
    expect(result.stdout).toMatch(/replayed chaos_a: \d+ events/);
    expect(await appending).toBe('done 2000');
    const [request, ...more] = await replayRequests(db, 'chaos_a');
    expect(more).toEqual([]);
    expect(request!.status).toBe('done');
    expect(request!.target).toBeGreaterThanOrEqual(built.at(-1)!);

    // The daemon back: both projections at the head, chaos_a rebuilt from zero, each event once.
    runner = await start();
    const all = await committed();
    expect(all).toHaveLength(3_500);
    await waitUntilAllApplied(db.pool, all, DAEMON_LOGS, 30_000);
    await expectRebuiltExactlyOnce(db, 'chaos_a', all, lastBefore);
    await expectExactlyOnceInOrder(db.pool, 'chaos_b', all);
  });
});
