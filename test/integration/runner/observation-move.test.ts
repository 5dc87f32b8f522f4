import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type pg from 'pg';
import { EventStore } from '../../../src/index.js';
import { storeNames } from '../../../src/db/identifiers.js';
import { readObservation } from '../../../src/high-water/tracker-sql.js';
import { createTestDatabase, waitFor, type TestDatabase } from '../../support/database.js';

/**
 * The high-water pass in one round trip (tracker-sql.ts readObservation's `move`): the observation's own statement
 * moves H over a run of committed positions right above it, and over nothing else. Each case is a writer the move
 * must not cross: a transaction still open, a late commit in a watched gap, another leader, a row moved meanwhile.
 */
const names = storeNames();
let db: TestDatabase;
let store: EventStore;
let listener: pg.Client;
let notified: string[];

beforeEach(async () => {
  db = await createTestDatabase();
  store = new EventStore(db.pool);
  await db.pool.query(`UPDATE projection_high_water SET leader = 'me', position = 0, head = 0`);
  listener = await db.connect();
  notified = [];
  listener.on('notification', (n) => n.channel === names.highWaterChannel && notified.push(n.payload ?? ''));
  await listener.query(`LISTEN ${names.highWaterChannel}`);
});
afterEach(() => db.drop());

const row = async () =>
  (await db.pool.query<{ p: string; h: string }>('SELECT position::text AS p, head::text AS h FROM projection_high_water')).rows[0]!;
const observe = (highWater: bigint, leader: string | undefined, watched: Array<[bigint, bigint]> = []) =>
  readObservation(
    db.pool,
    names,
    highWater,
    100_000,
    watched.map(([from, to]) => ({ from, to, firstSeenAt: 0, fence: null })),
    undefined,
    leader === undefined ? undefined : { leader },
  );
const appendOne = async (stream: string, client?: pg.ClientBase) =>
  (await store.append(stream, [{ type: 'E', data: {} }], client ? { client } : {})).lastPosition;

describe('the observation moves H in its own statement', () => {
  it('over a run without holes: H, head and the NOTIFY, in one statement', async () => {
    for (let i = 0; i < 3; i++) await appendOne(`s-${i}`);
    const { observation, movedTo } = await observe(0n, 'me');
    expect(movedTo).toBe(3n);
    expect(observation.window).toEqual({ first: 1n, last: 3n, holes: [] });
    expect(await row()).toEqual({ p: '3', h: '3' });
    await waitFor('the high-water NOTIFY', () => notified.includes('3'));
    // Nothing new above H: nothing written, no NOTIFY.
    const again = await observe(3n, 'me');
    expect(again.movedTo).toBeUndefined();
    expect(again.observation.window).toBeNull();
  });

  it('not past an open transaction: a hole above H moves nothing, and nor does one right above it', async () => {
    await appendOne('a');
    const slow = await db.connect();
    await slow.query('BEGIN');
    const held = await appendOne('held', slow);
    const after = await appendOne('b');
    const { observation, movedTo } = await observe(0n, 'me');
    expect(movedTo).toBeUndefined();
    expect(observation.window?.holes).toEqual([[held, held]]);
    expect(await row()).toEqual({ p: '0', h: '0' });
    // H standing right below the held position: the first visible one is above H + 1.
    await db.pool.query('UPDATE projection_high_water SET position = 1');
    const fromOne = await observe(1n, 'me');
    expect(fromOne.movedTo).toBeUndefined();
    expect(fromOne.observation.window?.first).toBe(after);
    expect((await row()).p).toBe('1');
    await slow.query('COMMIT');
    expect((await observe(1n, 'me')).movedTo).toBe(after);
    await waitFor('its NOTIFY', () => notified.includes(String(after)));
    expect(notified).toEqual([String(after)]);
  });

  it('not when a position of a watched gap has committed (a late commit the pass must record first)', async () => {
    const slow = await db.connect();
    await slow.query('BEGIN');
    const held = await appendOne('late', slow);
    const above = await appendOne('above');
    await db.pool.query('UPDATE projection_high_water SET position = $1', [String(above)]);
    const next = await appendOne('next');
    await slow.query('COMMIT');
    const { observation, movedTo } = await observe(above, 'me', [[held, held]]);
    expect(observation.lateVisible).toEqual([held]);
    expect(movedTo).toBeUndefined();
    expect((await row()).p).toBe(String(above));
    // The same run with nothing watched moves.
    expect((await observe(above, 'me')).movedTo).toBe(next);
  });

  it("not for a leader that is not the row's, nor when the row's H is not the one observed from", async () => {
    await appendOne('a');
    await appendOne('b');
    expect((await observe(0n, 'someone-else')).movedTo).toBeUndefined();
    expect((await observe(0n, undefined)).movedTo).toBeUndefined();
    await db.pool.query('UPDATE projection_high_water SET position = 1');
    expect((await observe(0n, 'me')).movedTo).toBeUndefined();
    expect((await row()).p).toBe('1');
    expect(notified).toEqual([]);
  });
});
