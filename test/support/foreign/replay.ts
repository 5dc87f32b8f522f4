import { expect } from 'vitest';
import type { StoreNamesOptions } from '../../../src/db/identifiers.js';
import { FIXTURE_PROJECTIONS, runCli, type CliResult } from '../child-runner.js';
import type { TestDatabase } from '../database.js';
import { expectExactlyOnceInOrder, type LogRow } from '../position-log.js';
import { sourceFlags } from './workload.js';

/** `projection-runner replay NAME --yes` on a foreign source, as an operator runs it (fixture projections). */
export function replayWithCli(db: TestDatabase, projection: string, source: StoreNamesOptions): Promise<CliResult> {
  return runCli(
    ['replay', projection, '--yes', '--projections', FIXTURE_PROJECTIONS, ...sourceFlags(source)],
    { DATABASE_URL: db.url },
    60_000,
  );
}

/** The last application (seq) in a position log; 0 when empty. TRUNCATE (a replay's reset) does not restart it. */
export async function lastApplication(db: TestDatabase, name: string): Promise<number> {
  const { rows } = await db.pool.query<{ seq: number }>(`SELECT coalesce(max(seq), 0)::int AS seq FROM log_${name}`);
  return rows[0]!.seq;
}

/**
 * The log was rebuilt from zero after `lastBefore` (every row applied since: none kept from before the replay) and
 * holds every committed event exactly once, in global order except the late ones.
 */
export async function expectRebuiltExactlyOnce(db: TestDatabase, name: string, committed: number[], lastBefore: number): Promise<LogRow[]> {
  const log = await expectExactlyOnceInOrder(db.pool, name, committed);
  const { rows } = await db.pool.query<{ first: number }>(`SELECT min(seq)::int AS first FROM log_${name}`);
  expect(rows[0]!.first).toBeGreaterThan(lastBefore);
  return log;
}

/** The replay requests of a projection, oldest first: status, target (the head at the reset) and events applied. */
export async function replayRequests(
  db: TestDatabase,
  projection: string,
): Promise<Array<{ status: string; target: number; applied: number }>> {
  const { rows } = await db.pool.query(
    `SELECT status, target::int AS target, applied::int AS applied FROM projection_replays WHERE projection = $1 ORDER BY id`,
    [projection],
  );
  return rows;
}
