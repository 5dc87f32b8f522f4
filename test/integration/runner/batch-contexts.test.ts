import pg from 'pg';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { storeNames } from '../../../src/db/identifiers.js';
import { EventStore } from '../../../src/index.js';
import { BatchContexts } from '../../../src/projector/batch-contexts.js';
import { createTestDatabase, type TestDatabase } from '../../support/database.js';

/** The batch contexts of an instance (projector/batch-contexts.ts): one read per wake-up, never one older than it. */
const names = storeNames();
let db: TestDatabase;
/** The contexts' own pool: its connections acquired count the reads. */
let pool: pg.Pool;
let connects: number;
let contexts: BatchContexts;

beforeEach(async () => {
  db = await createTestDatabase();
  pool = new pg.Pool({ connectionString: db.url, max: 4 });
  connects = 0;
  pool.on('acquire', () => connects++);
  contexts = new BatchContexts({ pool, names, maxAgeMs: 60_000 });
});
afterEach(async () => {
  await pool.end();
  await db.drop();
});

const setHighWater = (p: number) => db.pool.query('UPDATE projection_high_water SET position = $1', [p]);

describe('batch contexts', () => {
  it('one read serves every projection asking at or after its place, in flight too', async () => {
    await new EventStore(db.pool).append('s', [{ type: 'E', data: {} }]);
    await setHighWater(1);
    const before = connects;
    const all = await Promise.all(Array.from({ length: 16 }, (_, i) => contexts.get({ after: i % 2 === 0 ? 0n : 1n, lateSeenId: 0n })));
    expect(all.every((c) => c.highWater === 1n)).toBe(true);
    expect(connects - before).toBe(1);
  });

  it('after a wake-up that moved only H: no read, H raised; after any other: read again', async () => {
    await setHighWater(5);
    expect((await contexts.get({ after: 0n, lateSeenId: 0n })).highWater).toBe(5n);
    const before = connects;
    contexts.advance(9n);
    const raised = await contexts.get({ after: 5n, lateSeenId: 0n });
    expect(raised.highWater).toBe(9n);
    expect(raised.givenUp.completeTo).toBe(9n);
    expect(connects).toBe(before);
    // A wake-up that may have brought a late notice or a given-up range: the next asker reads what the row says.
    await db.pool.query(
      `INSERT INTO projection_gaps (from_position, to_position, first_seen_at, resolved_at, resolution) VALUES (7, 7, now(), now(), 'late')`,
    );
    await setHighWater(12);
    contexts.advance();
    const read = await contexts.get({ after: 9n, lateSeenId: 0n });
    expect(read.highWater).toBe(12n);
    expect(read.pendingLate.map((l) => l.position)).toEqual([7n]);
    expect(connects).toBe(before + 1);
  });

  it('a read older than its maximum age is not served', async () => {
    const short = new BatchContexts({ pool, names, maxAgeMs: 0 });
    await setHighWater(3);
    await short.get({ after: 0n, lateSeenId: 0n });
    await setHighWater(4);
    await new Promise((r) => setTimeout(r, 5));
    expect((await short.get({ after: 0n, lateSeenId: 0n })).highWater).toBe(4n);
  });
});
