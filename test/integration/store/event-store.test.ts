import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { InvalidAppendError, WrongExpectedVersionError, type EventStore } from '../../../src/index.js';
import { openStoreDatabase, type TestDatabase } from '../../support/database.js';

let db: TestDatabase;
let store: EventStore;

beforeAll(async () => ({ db, store } = await openStoreDatabase()));
afterAll(() => db.drop());

async function countRows(stream?: string): Promise<number> {
  const { rows } = await db.pool.query(
    stream ? 'SELECT count(*)::int AS n FROM events WHERE stream_name = $1' : 'SELECT count(*)::int AS n FROM events',
    stream ? [stream] : [],
  );
  return rows[0].n;
}

/** A store whose appends run on a session of their own, so concurrency is real (one backend each). */
async function separateSessions(count: number) {
  return Promise.all(Array.from({ length: count }, () => db.connect()));
}

describe('EventStore.append', () => {
  it('appends and reads back in stream and global order', async () => {
    const result = await store.append('account-1', [
      { type: 'Opened', data: { owner: 'ada' } },
      { type: 'Deposited', data: { amount: 10 }, metadata: { user: 'ada' } },
    ]);
    expect(result.lastPosition - result.firstPosition).toBe(1n);
    expect(result.streamVersion).toBe(2n);
    const events = await store.readStream('account-1');
    expect(events.map((e) => [e.type, e.streamPosition, e.data])).toEqual([
      ['Opened', 1n, { owner: 'ada' }],
      ['Deposited', 2n, { amount: 10 }],
    ]);
    expect(events[1]!.metadata).toEqual({ user: 'ada' });
    const all = await store.readAll({ after: result.firstPosition - 1n });
    expect(all.map((e) => e.globalPosition)).toEqual([result.firstPosition, result.lastPosition]);
  });

  it('serialises 32 concurrent appends to one stream: all succeed, positions exactly 1..32', async () => {
    const sessions = await separateSessions(32);
    // Each session holds its transaction open until all have started, so the appends really overlap.
    await Promise.all(sessions.map((c) => c.query('BEGIN')));
    const appends = sessions.map((client, i) =>
      store.append('race-stream', [{ type: 'Tick', data: { i } }], { client }).then(async (r) => {
        await client.query('COMMIT');
        return r;
      }),
    );
    const results = await Promise.all(appends);
    expect(results.map((r) => r.streamVersion).sort((a, b) => Number(a - b))).toEqual(Array.from({ length: 32 }, (_, i) => BigInt(i + 1)));
    const events = await store.readStream('race-stream');
    expect(events.map((e) => e.streamPosition)).toEqual(Array.from({ length: 32 }, (_, i) => BigInt(i + 1)));
  });

  it('lets exactly one of several appends with the same expectedVersion win', async () => {
    await store.append('occ', [{ type: 'Created', data: {} }]);
    const sessions = await separateSessions(8);
    const outcomes = await Promise.allSettled(
      sessions.map((client) => store.append('occ', [{ type: 'Changed', data: {} }], { expectedVersion: 1, client })),
    );
    const won = outcomes.filter((o) => o.status === 'fulfilled');
    const lost = outcomes.filter((o): o is PromiseRejectedResult => o.status === 'rejected');
    expect(won).toHaveLength(1);
    expect(lost).toHaveLength(7);
    for (const { reason } of lost) {
      expect(reason).toBeInstanceOf(WrongExpectedVersionError);
      expect(reason).toMatchObject({ stream: 'occ', expected: 1n, actual: 2n });
    }
    expect(await countRows('occ')).toBe(2);
  });

  it('expectedVersion 0 means the stream must not exist', async () => {
    await store.append('fresh', [{ type: 'A', data: {} }], { expectedVersion: 0 });
    await expect(store.append('fresh', [{ type: 'B', data: {} }], { expectedVersion: 0 })).rejects.toMatchObject({
      name: 'WrongExpectedVersionError',
      actual: 1n,
    });
  });

  it('gives the events of one append consecutive global positions with 16 concurrent appenders', async () => {
    const sessions = await separateSessions(16);
    const results = await Promise.all(
      sessions.flatMap((client, writer) =>
        Array.from({ length: 1 }, async () => {
          const out = [];
          for (let round = 0; round < 10; round++) {
            out.push(
              await store.append(
                `batch-${writer}-${round}`,
                [
                  { type: 'One', data: { writer } },
                  { type: 'Two', data: { writer } },
                  { type: 'Three', data: { writer } },
                ],
                { client },
              ),
            );
          }
          return out;
        }),
      ),
    );
    const flat = results.flat();
    expect(flat).toHaveLength(160);
    for (const r of flat) expect(r.lastPosition - r.firstPosition).toBe(2n);
    const { rows } = await db.pool.query(`
      SELECT stream_name, array_agg(global_position ORDER BY stream_position)::text[] AS positions
        FROM events WHERE stream_name LIKE 'batch-%' GROUP BY stream_name`);
    expect(rows).toHaveLength(160);
    for (const row of rows) {
      const [a, b, c] = row.positions.map(BigInt);
      expect([b - a, c - b]).toEqual([1n, 1n]);
    }
  });

  it('keeps a batch consecutive even when plain INSERTs take positions meanwhile', async () => {
    const inserter = await db.connect();
    const stop = { done: false };
    const plain = (async () => {
      let i = 0;
      while (!stop.done) {
        await inserter.query(`INSERT INTO events (stream_name, stream_position, type, data) VALUES ($1, 1, 'Plain', '{}')`, [
          `plain-${i++}`,
        ]);
      }
      return i;
    })();
    const writers = await separateSessions(4);
    const results = await Promise.all(
      writers.map(async (client, w) => {
        const out = [];
        for (let i = 0; i < 25; i++) {
          out.push(
            await store.append(
              `mixed-${w}-${i}`,
              Array.from({ length: 5 }, () => ({ type: 'E', data: {} })),
              { client },
            ),
          );
        }
        return out;
      }),
    );
    stop.done = true;
    expect(await plain).toBeGreaterThan(0);
    for (const r of results.flat()) expect(r.lastPosition - r.firstPosition).toBe(4n);
  });

  it('leaves no rows and a hole in global positions when the caller rolls back', async () => {
    const client = await db.connect();
    const before = await store.append('around', [{ type: 'Before', data: {} }]);
    await client.query('BEGIN');
    const inside = await store.append(
      'rolled-back',
      [
        { type: 'Lost', data: {} },
        { type: 'Lost', data: {} },
      ],
      { client },
    );
    await client.query('ROLLBACK');
    const after = await store.append('around', [{ type: 'After', data: {} }]);
    expect(await countRows('rolled-back')).toBe(0);
    expect(inside.firstPosition).toBeGreaterThan(before.lastPosition);
    expect(after.firstPosition).toBeGreaterThan(inside.lastPosition);
    const visible = (await store.readAll({ after: before.lastPosition - 1n, limit: 10 })).map((e) => e.globalPosition);
    expect(visible).toEqual([before.lastPosition, after.firstPosition]);
  });

  it('notifies the channel with the last position on commit, and not on rollback', async () => {
    // Writers notify while a runner sleeps (the wake-up flag at 1, as a sleeping leader sets it).
    await db.pool.query(`SELECT setval('projection_wake_flag', 1)`);
    const listener = await db.connect();
    const received: string[] = [];
    listener.on('notification', (n) => received.push(n.payload!));
    await listener.query('LISTEN events');
    const writer = await db.connect();
    await writer.query('BEGIN');
    await store.append('notify-rb', [{ type: 'X', data: {} }], { client: writer });
    await writer.query('ROLLBACK');
    const committed = await store.append('notify', [
      { type: 'X', data: {} },
      { type: 'Y', data: {} },
    ]);
    await new Promise<void>((resolve) => {
      const check = () => (received.length > 0 ? resolve() : setTimeout(check, 10));
      check();
    });
    expect(received).toEqual([committed.lastPosition.toString()]);
  });

  describe('bad input: a typed error and zero rows', () => {
    const cycle: Record<string, unknown> = {};
    cycle.self = cycle;
    const cases: Array<[string, () => Promise<unknown>]> = [
      ['empty stream name', () => store.append('', [{ type: 'A', data: {} }])],
      ['blank stream name', () => store.append('   ', [{ type: 'A', data: {} }])],
      ['stream name too long', () => store.append('s'.repeat(513), [{ type: 'A', data: {} }])],
      ['empty event list', () => store.append('bad-1', [])],
      ['missing type', () => store.append('bad-2', [{ data: {} } as never])],
      ['empty type', () => store.append('bad-3', [{ type: '', data: {} }])],
      ['BigInt in data', () => store.append('bad-4', [{ type: 'A', data: { n: 1n } }])],
      ['cycle in data', () => store.append('bad-5', [{ type: 'A', data: cycle }])],
      ['undefined data', () => store.append('bad-6', [{ type: 'A', data: undefined }])],
      ['BigInt in metadata', () => store.append('bad-7', [{ type: 'A', data: {}, metadata: { n: 2n } }])],
      [
        'second event bad, first fine',
        () =>
          store.append('bad-8', [
            { type: 'A', data: {} },
            { type: 'B', data: cycle },
          ]),
      ],
      ['negative expectedVersion', () => store.append('bad-9', [{ type: 'A', data: {} }], { expectedVersion: -1 })],
    ];
    it.each(cases)('%s', async (_label, append) => {
      const before = await countRows();
      await expect(append()).rejects.toBeInstanceOf(InvalidAppendError);
      expect(await countRows()).toBe(before);
    });
  });

  it('surfaces database errors unchanged in kind', async () => {
    const client = await db.connect();
    await client.query('BEGIN');
    await client.query('SELECT 1/0').catch(() => {});
    const error = await store.append('aborted', [{ type: 'A', data: {} }], { client }).catch((e) => e);
    await client.query('ROLLBACK');
    expect(error.constructor.name).toBe('DatabaseError');
    expect(error.code).toBe('25P02');
  });
});
