import { describe, expect, it } from 'vitest';
import { defineProjection } from '../../../src/index.js';
import { storeNames } from '../../../src/db/identifiers.js';
import { readReplay, requestReplay } from '../../../src/replay/requests.js';
import { waitFor } from '../../support/database.js';
import { committedPositions, expectExactlyOnceInOrder, positionLog, readLog, waitUntilAllApplied } from '../../support/position-log.js';
import { startRunner, useRunnerFixture } from '../../support/runner.js';

/**
 * Attacks on the shared reader (src/sources/shared-reader.ts): interleavings in which a page read in an older
 * snapshot, or shared between projections, could make one of them skip, repeat or reorder an event.
 */
const t = useRunnerFixture();
const names = storeNames();
const options = { gapTimeoutMs: 300, batchSize: 100, pollIntervalMs: 100 };

async function checkpointOf(name: string): Promise<string | undefined> {
  const { rows } = await t.db.pool.query(`SELECT position::text FROM projection_checkpoints WHERE name = $1`, [name]);
  return rows[0]?.position;
}

/** A projection whose handler waits at `position` until `release()` (its batch transaction stays open meanwhile). */
function blockingLog(name: string, position: bigint) {
  let release: () => void = () => {};
  const released = new Promise<void>((resolve) => (release = resolve));
  let reached = false;
  const projection = positionLog(name);
  const handle = projection.handle!.bind(projection);
  projection.handle = async (event, tx) => {
    if (event.globalPosition === position) {
      reached = true;
      await released;
    }
    await handle(event, tx);
  };
  return { projection, release: () => release(), reached: () => reached };
}

/**
 * Events 1..`total` with `latePosition` held open in a transaction of its own (so that it is given up); returns the
 * commit of that transaction.
 */
async function writeWithHeldPosition(total: number, latePosition: number): Promise<() => Promise<void>> {
  for (let i = 1; i < latePosition; i++) await t.store.append(`s-${i}`, [{ type: 'E', data: { i } }]);
  const held = await t.db.connect();
  await held.query('BEGIN');
  const late = await t.store.append('held', [{ type: 'E', data: { late: true } }], { client: held });
  expect(late.firstPosition).toBe(BigInt(latePosition));
  for (let i = latePosition + 1; i <= total; i++) await t.store.append(`s-${i}`, [{ type: 'E', data: { i } }]);
  return async () => {
    await held.query('COMMIT');
  };
}

async function waitForLateNotice(position: number): Promise<void> {
  await waitFor(
    `late notice for ${position}`,
    async () =>
      (await t.db.pool.query(`SELECT 1 FROM projection_gaps WHERE resolution = 'late' AND from_position = $1`, [position])).rows.length ===
      1,
  );
}

describe('shared reader attacks', () => {
  it('a replay reset after a late commit reuses a held page read before that commit: the late event reaches the rebuilt read model', async () => {
    // The interleaving: page (19, 30] is read while 20 is given up; 20 commits late; `a` and `b` get it late. A slow
    // projection `c` (its batch blocked at event 1) keeps every page held. `b` is replayed: resetForReplay marks every
    // late notice so far as seen ("a rebuild reads every committed event anyway"), but the rebuild's second batch is
    // served the held page (19, 30] without 20: 20 is recorded as skipped, and no notice is pending to deliver it.
    const commitLate = await writeWithHeldPosition(30, 20);
    const slow = blockingLog('c', 1n);
    t.runner = await startRunner(t.db, { ...options, projections: [positionLog('a'), positionLog('b'), slow.projection] });
    await waitFor('c blocked at event 1', () => slow.reached());
    await waitFor('a and b at 30 without 20', async () => (await checkpointOf('a')) === '30' && (await checkpointOf('b')) === '30');
    await commitLate();
    await waitForLateNotice(20);
    await waitFor('a and b got 20 late', async () => {
      const { rows } = await t.db.pool.query(
        `SELECT (SELECT count(*) FROM log_a WHERE position = 20) + (SELECT count(*) FROM log_b WHERE position = 20) AS n`,
      );
      return Number(rows[0].n) === 2;
    });

    const replay = await requestReplay(t.db.pool, names, 'b', 'test');
    await waitFor('replay of b done', async () => (await readReplay(t.db.pool, names, replay)).status === 'done', 30_000);
    // Give the late path every chance (several poll intervals) before judging.
    await waitFor(
      'b has 20 again',
      async () => (await t.db.pool.query(`SELECT 1 FROM log_b WHERE position = 20`)).rows.length === 1,
      3_000,
    ).catch(() => {});
    const committed = await committedPositions(t.db.pool);
    slow.release();
    await expectExactlyOnceInOrder(t.db.pool, 'b', committed);
  });

  it('control: the same replay with no page held from before the late commit rebuilds with 20 (read afresh)', async () => {
    const commitLate = await writeWithHeldPosition(30, 20);
    t.runner = await startRunner(t.db, { ...options, projections: [positionLog('a'), positionLog('b')] });
    await waitFor('a and b at 30 without 20', async () => (await checkpointOf('a')) === '30' && (await checkpointOf('b')) === '30');
    await commitLate();
    await waitForLateNotice(20);
    const replay = await requestReplay(t.db.pool, names, 'b', 'test');
    await waitFor('replay of b done', async () => (await readReplay(t.db.pool, names, replay)).status === 'done', 30_000);
    const committed = await committedPositions(t.db.pool);
    await waitUntilAllApplied(t.db.pool, committed, ['a', 'b'], 10_000);
    await expectExactlyOnceInOrder(t.db.pool, 'a', committed);
    const log = await expectExactlyOnceInOrder(t.db.pool, 'b', committed);
    // Rebuilt from fresh reads: 20 in order this time.
    expect(log.find((r) => r.position === 20)).toEqual({ position: 20, applied: 1, late: false });
  });

  it('projections sharing a page: a handler that changes the recordedAt of its event (a Date, which freezing cannot protect) fails at once, and the others see the time unchanged', async () => {
    // Freezing stops writes to the event and to data/metadata, but recordedAt is a Date: setTime() would change its
    // internal slot through the frozen event, and the event objects are shared. `observer` waits at event 1 (holding
    // its slice of the shared page) until `mutator` has tried, then records the recordedAt it is given.
    for (let i = 1; i <= 10; i++) await t.store.append(`s-${i}`, [{ type: 'E', data: { i } }]);
    let release: () => void = () => {};
    const released = new Promise<void>((resolve) => (release = resolve));
    // The data objects mutator was given: the ones observer gets too prove that the two shared a page.
    const mutatorData = new Map<bigint, unknown>();
    let sharedWithMutator = 0;
    const mutator = defineProjection({
      name: 'mutator',
      async handle(event) {
        mutatorData.set(event.globalPosition, event.data);
        event.recordedAt.setTime(0); // a handler normalising a timestamp in place
      },
    });
    const observer = defineProjection({
      name: 'observer',
      async setup(db) {
        await db.query(`CREATE TABLE IF NOT EXISTS observed (position bigint PRIMARY KEY, recorded_ms float8 NOT NULL)`);
      },
      async handle(event, tx) {
        if (event.globalPosition === 1n) await released;
        if (mutatorData.get(event.globalPosition) === event.data) sharedWithMutator++;
        await tx.query(`INSERT INTO observed VALUES ($1, $2)`, [event.globalPosition.toString(), event.recordedAt.getTime()]);
      },
    });
    // Batches of 5: more than a batch behind H, both read through the shared reader.
    t.runner = await startRunner(t.db, { ...options, batchSize: 5, handlerRetries: 0, projections: [observer, mutator] });
    const failure = async () =>
      (await t.db.pool.query(`SELECT state, last_error FROM projection_checkpoints WHERE name = 'mutator'`)).rows[0] as
        { state: string; last_error: { message: string; position: string } | null } | undefined;
    await waitFor('mutator failed', async () => (await failure())?.state === 'failed');
    expect((await failure())!.last_error).toMatchObject({ position: '1', message: expect.stringContaining('events are read-only') });
    release();
    await waitFor('observer at 10', async () => (await checkpointOf('observer')) === '10');
    const { rows } = await t.db.pool.query(`SELECT position::int, recorded_ms FROM observed WHERE recorded_ms = 0 ORDER BY position`);
    expect(sharedWithMutator).toBeGreaterThan(0);
    expect(rows).toEqual([]);
    // recordedAt is still a Date to everything that reads it.
    const { rows: times } = await t.db.pool.query(`SELECT count(*)::int AS n FROM observed o JOIN events e ON e.global_position = o.position
                                                     WHERE abs(o.recorded_ms - extract(epoch FROM e.recorded_at)::float8 * 1000) < 1`);
    expect(times[0].n).toBe(10);
  });

  it('held: typed projections, pages cut by --batch-bytes, late commits of both types: each applies exactly its types, once', async () => {
    // Pages hold every type and are cut short by bytes (about 4 events each); `typed` filters in memory and records
    // the other types as passed. Writers hold some appends open past the gap timeout and commit them late.
    const all = positionLog('all');
    const typed = positionLog('typed');
    typed.eventTypes = ['A'];
    t.runner = await startRunner(t.db, { ...options, batchSize: 7, batchBytes: 2_000, projections: [all, typed] });
    const pad = 'x'.repeat(450);
    const lateCommits: Array<Promise<void>> = [];
    await Promise.all(
      Array.from({ length: 3 }, async (_, w) => {
        for (let i = 0; i < 40; i++) {
          const type = (i + w) % 3 === 0 ? 'A' : 'B';
          if (i % 13 !== 5) {
            await t.store.append(`s-${w}-${i % 4}`, [{ type, data: { pad: `${pad}${i}` } }]);
            continue;
          }
          const client = await t.db.connect();
          await client.query('BEGIN');
          await t.store.append(`held-${w}-${i}`, [{ type, data: { pad } }], { client });
          // Committed after the gap timeout (late), while the writers go on.
          lateCommits.push(new Promise((r) => setTimeout(r, 700)).then(async () => void (await client.query('COMMIT'))));
        }
      }),
    );
    await Promise.all(lateCommits);
    const committed = await committedPositions(t.db.pool);
    const { rows } = await t.db.pool.query(`SELECT global_position::int AS p FROM events WHERE type = 'A' ORDER BY 1`);
    const typedCommitted = rows.map((r) => r.p);
    await waitFor(
      'every log complete',
      async () => {
        const a = await readLog(t.db.pool, 'all');
        const b = await readLog(t.db.pool, 'typed');
        return (
          a.length === committed.length && b.length === typedCommitted.length && (await checkpointOf('typed')) === String(committed.at(-1))
        );
      },
      30_000,
    );
    await expectExactlyOnceInOrder(t.db.pool, 'all', committed);
    await expectExactlyOnceInOrder(t.db.pool, 'typed', typedCommitted);
    const late = await t.db.pool.query(`SELECT count(*)::int AS n FROM projection_gaps WHERE resolution = 'late'`);
    expect(late.rows[0].n).toBeGreaterThan(0);
  });

  it('held: read-aheads and direct page reads killed again and again (pg_terminate_backend) while three projections catch up', async () => {
    for (let i = 0; i < 30; i++) {
      await t.store.append(
        `s-${i % 7}`,
        Array.from({ length: 50 }, (_, k) => ({ type: 'E', data: { i, k } })),
      );
    }
    const three = ['a', 'b', 'c'];
    t.runner = await startRunner(t.db, { ...options, batchSize: 20, projections: three.map((n) => positionLog(n)) });
    let killing = true;
    let kills = 0;
    const killer = (async () => {
      while (killing) {
        const { rows } = await t.db.pool.query(
          `SELECT count(pg_terminate_backend(pid))::int AS n FROM pg_stat_activity
            WHERE datname = current_database() AND application_name = 'projection-runner:runner' AND state = 'active'`,
        );
        kills += rows[0].n;
        await new Promise((r) => setTimeout(r, 15));
      }
    })();
    // Appends go on while the killer kills: projections that caught up would leave it nothing active to kill.
    const writer = (async () => {
      for (let i = 0; killing; i++) {
        await t.store.append(
          `w-${i % 5}`,
          Array.from({ length: 20 }, (_, k) => ({ type: 'E', data: { i, k } })),
        );
        await new Promise((r) => setTimeout(r, 10));
      }
    })();
    try {
      await waitFor('some reads killed', () => kills >= 20, 30_000);
    } finally {
      killing = false;
      await killer;
      await writer;
    }
    const committed = await committedPositions(t.db.pool);
    await waitUntilAllApplied(t.db.pool, committed, three, 60_000);
    for (const name of three) await expectExactlyOnceInOrder(t.db.pool, name, committed);
  });

  it('held: a reactor appending in its own batch transaction, sharing pages with a plain log, while writers append', async () => {
    const reactor = defineProjection({
      name: 'reactor',
      eventTypes: ['E'],
      async setup(db) {
        await db.query(`CREATE TABLE IF NOT EXISTS reacted (position bigint PRIMARY KEY)`);
      },
      async handle(event, tx) {
        await tx.query(`INSERT INTO reacted VALUES ($1)`, [event.globalPosition.toString()]);
        await t.store.append(`derived-${event.globalPosition}`, [{ type: 'Derived', data: { from: event.globalPosition.toString() } }], {
          client: tx,
        });
      },
    });
    t.runner = await startRunner(t.db, { ...options, batchSize: 5, projections: [reactor, positionLog('log'), positionLog('log2')] });
    for (let i = 0; i < 60; i++) await t.store.append(`s-${i % 5}`, [{ type: 'E', data: { i } }]);
    await waitFor(
      'one Derived per E',
      async () => {
        const { rows } = await t.db.pool.query(`SELECT count(*) FILTER (WHERE type = 'Derived')::int AS d FROM events`);
        return rows[0].d === 60;
      },
      30_000,
    );
    const committed = await committedPositions(t.db.pool);
    await waitUntilAllApplied(t.db.pool, committed, ['log', 'log2'], 30_000).catch(() => {});
    await expectExactlyOnceInOrder(t.db.pool, 'log', committed);
    await expectExactlyOnceInOrder(t.db.pool, 'log2', committed);
    const { rows } = await t.db.pool.query(`SELECT count(*)::int AS n FROM reacted`);
    expect(rows[0].n).toBe(60);
  });

  it('held: a skip-policy projection that refuses the late event dead-letters it once, while its page partner gets it late', async () => {
    const commitLate = await writeWithHeldPosition(30, 20);
    const picky = positionLog('picky', { failAt: (e) => e.late === true });
    picky.onError = 'skip';
    t.runner = await startRunner(t.db, { ...options, batchSize: 6, handlerRetries: 0, projections: [positionLog('a'), picky] });
    await waitFor('both at 30 without 20', async () => (await checkpointOf('a')) === '30' && (await checkpointOf('picky')) === '30');
    await commitLate();
    await waitForLateNotice(20);
    await waitFor(
      '20 dead-lettered by picky',
      async () =>
        (await t.db.pool.query(`SELECT 1 FROM projection_dead_letters WHERE projection = 'picky' AND global_position = 20`)).rows.length ===
        1,
    );
    const committed = await committedPositions(t.db.pool);
    await waitFor('a has 20', async () => (await t.db.pool.query(`SELECT 1 FROM log_a WHERE position = 20`)).rows.length === 1);
    await expectExactlyOnceInOrder(t.db.pool, 'a', committed);
    await expectExactlyOnceInOrder(
      t.db.pool,
      'picky',
      committed.filter((p) => p !== 20),
    );
    const { rows } = await t.db.pool.query(
      `SELECT count(*)::int AS n, bool_and(late) AS late FROM projection_dead_letters WHERE projection = 'picky'`,
    );
    expect(rows[0]).toEqual({ n: 1, late: true });
    expect(await checkpointOf('picky')).toBe('30');
  });

  it('held: ten projections at different speeds (more than maxPages apart) racing for the same pages while writers append and roll back', async () => {
    const ten = Array.from({ length: 10 }, (_, i) => {
      const log = positionLog(`p${i}`);
      const handle = log.handle!.bind(log);
      log.handle = async (event, tx) => {
        if (i % 3 === 0 && event.globalPosition % 7n === 0n) await new Promise((r) => setTimeout(r, 2 * i));
        await handle(event, tx);
      };
      return log;
    });
    t.runner = await startRunner(t.db, { ...options, batchSize: 4, projections: ten });
    await Promise.all(
      Array.from({ length: 4 }, async (_, w) => {
        for (let i = 0; i < 50; i++) {
          const events = Array.from({ length: 1 + (i % 3) }, () => ({ type: 'E', data: { w, i } }));
          if (i % 10 !== 7) {
            await t.store.append(`s-${w}-${i % 5}`, events);
            continue;
          }
          const client = await t.db.connect();
          await client.query('BEGIN');
          await t.store.append(`s-${w}-${i % 5}`, events, { client });
          await client.query('ROLLBACK');
          await client.end();
        }
      }),
    );
    const committed = await committedPositions(t.db.pool);
    const names10 = ten.map((p) => p.name);
    await waitUntilAllApplied(t.db.pool, committed, names10, 60_000);
    for (const name of names10) await expectExactlyOnceInOrder(t.db.pool, name, committed);
  });
});
