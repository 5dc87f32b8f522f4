import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { defineProjection, type StoredEvent } from '../../../src/index.js';
import { storeNames } from '../../../src/db/identifiers.js';
import { readEvents, readEventsAt } from '../../../src/sources/native.js';
import { waitFor } from '../../support/database.js';
import { startRunner, useRunnerFixture } from '../../support/runner.js';

/**
 * Events as handlers get them (src/sources/read-only-event.ts), read from a real table: data, metadata and recordedAt
 * parsed only when a handler reads them, once, by the process's own parsers; read-only whoever reads them first.
 */
const t = useRunnerFixture();
const names = storeNames();
const { JSONB, TIMESTAMPTZ } = pg.types.builtins;

/** Counts the calls of the process's jsonb and timestamptz parsers while `fn` runs, then puts them back. */
async function countingParses<T>(fn: (calls: { jsonb: number; timestamptz: number }) => Promise<T>): Promise<T> {
  const jsonb = pg.types.getTypeParser(JSONB, 'text');
  const timestamptz = pg.types.getTypeParser(TIMESTAMPTZ, 'text');
  const calls = { jsonb: 0, timestamptz: 0 };
  pg.types.setTypeParser(JSONB, 'text', (text) => (calls.jsonb++, jsonb(text)));
  pg.types.setTypeParser(TIMESTAMPTZ, 'text', (text) => (calls.timestamptz++, timestamptz(text)));
  try {
    return await fn(calls);
  } finally {
    pg.types.setTypeParser(JSONB, 'text', jsonb);
    pg.types.setTypeParser(TIMESTAMPTZ, 'text', timestamptz);
  }
}

describe('read-only events read from the table', () => {
  it('a read parses no data, metadata or time; the first read of a field parses it once, the second gets the same value', async () => {
    for (let i = 1; i <= 20; i++)
      await t.store.append(`s-${i % 3}`, [{ type: 'E', data: { i, nested: { list: [i] } }, metadata: { by: i } }]);
    await countingParses(async (calls) => {
      const { events } = await readEvents(t.db.pool, names, 0n, 20n, 100, undefined);
      const late = await readEventsAt(await t.db.connect(), names, [5n, 6n]);
      expect(events).toHaveLength(20);
      expect(late.map((e) => e.globalPosition)).toEqual([5n, 6n]);
      // A handler that reads only the position and type (a no-op, a filter by type) costs no parse at all.
      expect(calls).toEqual({ jsonb: 0, timestamptz: 0 });

      const e = events[9]!;
      const data = e.data;
      expect(calls).toEqual({ jsonb: 1, timestamptz: 0 });
      expect(e.data).toBe(data);
      expect(e.recordedAt).toBe(e.recordedAt);
      expect(e.metadata).toBe(e.metadata);
      expect(calls).toEqual({ jsonb: 2, timestamptz: 1 });
    });

    // Parsed, the events are what the store reads with the process's parsers: every field, own and enumerable.
    const { events } = await readEvents(t.db.pool, names, 0n, 20n, 100, undefined);
    const stored = await t.store.readAll();
    expect(events.map((e) => ({ ...e }))).toEqual(stored);
    expect(JSON.stringify(events.map((e) => ({ ...e, globalPosition: 0, streamPosition: 0 })))).toBe(
      JSON.stringify(stored.map((e) => ({ ...e, globalPosition: 0, streamPosition: 0 }))),
    );
  });

  it('projections sharing a page: a handler that changes nested data fails at once, and the others see the data unchanged', async () => {
    // `mutator` is the first to read the data of each event (it is parsed and frozen on that read); `observer` waits
    // at event 1, holding its slice of the shared page, until `mutator` has failed, then records the data it gets;
    // `blind` never reads data (the field stays unparsed for it) and must apply every event all the same.
    for (let i = 1; i <= 10; i++) await t.store.append(`s-${i}`, [{ type: 'E', data: { i, owner: { name: 'Ann' }, tags: ['a'] } }]);
    let release: () => void = () => {};
    const released = new Promise<void>((resolve) => (release = resolve));
    const mutatorEvents = new Map<bigint, StoredEvent>();
    let sharedWithMutator = 0;
    const mutator = defineProjection({
      name: 'mutator',
      async handle(event) {
        mutatorEvents.set(event.globalPosition, event);
        event.data.owner.name = 'Bob'; // a handler normalising its event in place
      },
    });
    const observer = defineProjection({
      name: 'observer',
      async setup(db) {
        await db.query(`CREATE TABLE IF NOT EXISTS observed (position bigint PRIMARY KEY, data jsonb NOT NULL)`);
      },
      async handle(event, tx) {
        if (event.globalPosition === 1n) await released;
        if (mutatorEvents.get(event.globalPosition) === event) sharedWithMutator++;
        await tx.query(`INSERT INTO observed VALUES ($1, $2)`, [event.globalPosition.toString(), JSON.stringify(event.data)]);
      },
    });
    let blindApplied = 0;
    const blind = defineProjection({
      name: 'blind',
      async handle() {
        blindApplied++;
      },
    });
    t.runner = await startRunner(t.db, { batchSize: 5, handlerRetries: 0, projections: [observer, mutator, blind] });
    const failure = async () =>
      (await t.db.pool.query(`SELECT state, last_error FROM projection_checkpoints WHERE name = 'mutator'`)).rows[0] as
        { state: string; last_error: { message: string; position: string } | null } | undefined;
    await waitFor('mutator failed', async () => (await failure())?.state === 'failed');
    expect((await failure())!.last_error).toMatchObject({ position: '1', message: expect.stringMatching(/read[- ]only/) });
    release();
    const checkpoint = async (name: string) =>
      (await t.db.pool.query(`SELECT position::int FROM projection_checkpoints WHERE name = $1`, [name])).rows[0]?.position;
    await waitFor('observer and blind at 10', async () => (await checkpoint('observer')) === 10 && (await checkpoint('blind')) === 10);
    expect(sharedWithMutator).toBeGreaterThan(0);
    expect(blindApplied).toBe(10);
    const { rows } = await t.db.pool.query(`SELECT position::int, data FROM observed ORDER BY position`);
    expect(rows).toEqual(
      Array.from({ length: 10 }, (_, i) => ({ position: i + 1, data: { i: i + 1, owner: { name: 'Ann' }, tags: ['a'] } })),
    );
  });
});
