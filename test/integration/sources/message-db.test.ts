import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { defineProjection, type Runner, type RunnerOptions, type StoredEvent } from '../../../src/index.js';
import { readStatus } from '../../../src/cli/status.js';
import { storeNames } from '../../../src/db/identifiers.js';
import { migrations } from '../../../src/db/migrations.js';
import { prepareStore } from '../../../src/sources/prepare.js';
import '../../../src/sources/prepare.js';
import { createTestDatabase, waitFor, type TestDatabase } from '../../support/database.js';
import { connectMessageDb, installMessageDb, messageDbStore, writeMessage } from '../../support/foreign/message-db.js';
import { holdOneOpen } from '../../support/foreign/workload.js';
import { expectExactlyOnceInOrder, positionLog, readLog } from '../../support/position-log.js';
import { capturingLogger, startRunner } from '../../support/runner.js';

/** The real message-db (its install.sh), written by message_store.write_message, read with --source message-db. */
let db: TestDatabase;
const runners: Runner[] = [];
const SOURCE: Partial<RunnerOptions> = { source: 'message-db', channel: 'message_store' };

beforeAll(async () => {
  db = await createTestDatabase({ migrated: false });
  await installMessageDb(db.url);
}, 120_000);
afterAll(async () => {
  for (const r of runners) await r.stop();
  await db.drop();
});

const delivered: StoredEvent[] = [];
const shape = defineProjection({
  name: 'shape',
  async handle(event) {
    delivered.push(event);
  },
});

describe('--source message-db', () => {
  it('migrate adds the runner tables and the NOTIFY trigger, nothing else (global_position is the primary key)', async () => {
    const report = await prepareStore(db.pool, storeNames(SOURCE as never));
    expect(report.applied).toEqual(migrations.map((m) => m.version));
    expect(report.attached).toEqual([
      expect.stringMatching(/^created the trigger projection_runner_notify_message_store on "message_store"."messages"/),
    ]);
    const { rows } = await db.pool.query(
      `SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'message_store' AND c.relkind IN ('r', 'p', 'i', 'S') ORDER BY 1`,
    );
    // install.sh's objects only: no index, no table of the runner in message_store.
    expect(rows.map((r) => r.relname)).toEqual([
      'messages',
      'messages_category',
      'messages_global_position_seq',
      'messages_id',
      'messages_pkey',
      'messages_stream',
    ]);
  });

  it('concurrent write_message writers, some rolled back, one held open past the gap timeout: every message exactly once, in order but the late one', async () => {
    const { log, lines } = capturingLogger();
    runners.push(
      await startRunner(db, {
        ...SOURCE,
        projections: [positionLog('mdb'), shape],
        gapEvidence: 'auto',
        gapTimeoutMs: 1_500,
        log,
      }),
    );
    expect(lines.filter((l) => String(l.msg).startsWith('gap evidence enabled'))).toHaveLength(1);

    // Held open: takes a position, then others commit above it; it commits after the gap timed out and the projection
    // passed it (late).
    const held = await holdOneOpen(messageDbStore(db));

    const writers = Array.from({ length: 6 }, async (_, w) => {
      const client = await connectMessageDb(db.url);
      try {
        for (let i = 0; i < 30; i++) {
          await client.query('BEGIN');
          // Category w<w>: writers of different categories do not wait for each other.
          await writeMessage(client, { streamName: `w${w}-${i % 3}`, type: 'Ticked', data: { w, i }, metadata: i % 2 ? { i } : undefined });
          await client.query(i % 5 === 2 ? 'ROLLBACK' : 'COMMIT');
        }
      } finally {
        await client.end();
      }
    });
    await Promise.all(writers);
    await held.commitLate(db, ['mdb']);
    await held.end();

    const { rows } = await db.pool.query('SELECT global_position::int AS p FROM message_store.messages ORDER BY 1');
    const committed = rows.map((r) => r.p as number);
    expect(committed).toHaveLength(1 + 6 * 24);
    await waitFor('every message applied', async () => (await readLog(db.pool, 'mdb')).length === committed.length, 20_000);
    const log2 = await expectExactlyOnceInOrder(db.pool, 'mdb', committed);
    expect(log2.find((r) => r.position === held.position)).toEqual({ position: held.position, applied: 1, late: true });

    // The mapping: position 0-based as message-db has it, time (UTC, no zone) as the right instant, NULL metadata {}.
    const { rows: stored } = await db.pool.query(
      `SELECT global_position::text AS gp, position::text AS sp, stream_name, type,
              (extract(epoch FROM time AT TIME ZONE 'UTC') * 1000)::float8 AS ms, metadata
         FROM message_store.messages WHERE stream_name = 'w1-0' ORDER BY position`,
    );
    const mine = delivered.filter((e) => e.streamName === 'w1-0').sort((a, b) => Number(a.streamPosition - b.streamPosition));
    expect(mine.map((e) => [e.globalPosition.toString(), e.streamPosition.toString(), e.type, e.metadata])).toEqual(
      stored.map((r) => [r.gp, r.sp, r.type, r.metadata ?? {}]),
    );
    expect(mine[0]!.streamPosition).toBe(0n);
    for (const [i, e] of mine.entries()) expect(e.recordedAt.getTime()).toBeCloseTo(stored[i]!.ms, -1);
    expect(Math.abs(mine[0]!.recordedAt.getTime() - Date.now())).toBeLessThan(60_000);

    const status = await readStatus(db.pool, storeNames(SOURCE as never));
    expect(status.head).toBe(committed.at(-1));
    expect(status.projections.every((p) => p.position === committed.at(-1) && p.lagEvents === 0)).toBe(true);
  });
});
