import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { describe, expect, it } from 'vitest';
import { defineProjection, EventStore } from '../../../src/index.js';
import { DEFERRED_CHECKPOINT_MS } from '../../../src/projector/deferral.js';
import { REPO, startDaemon, useDaemonFixture } from '../../support/child-runner.js';
import { waitFor } from '../../support/database.js';
import { expectExactlyOnceInOrder, positionLog, readLog } from '../../support/position-log.js';
import { startRunner, useRunnerFixture } from '../../support/runner.js';

/**
 * Batches that send no statement (pipeline.ts, deferral.ts mayDeferCheckpoint): their checkpoint move waits in memory
 * and is written with the next batch that has one, or within DEFERRED_CHECKPOINT_MS. What must hold: the row catches
 * up; what a handler wrote is applied exactly once however the daemon dies; the failure path and commands start from
 * the row as it really is; a lazily begun transaction never lets a handler's statement run outside it.
 */
const t = useRunnerFixture();

const row = async (name: string) =>
  (
    await t.db.pool.query<{ p: number; s: string }>('SELECT position::int AS p, state AS s FROM projection_checkpoints WHERE name = $1', [
      name,
    ])
  ).rows[0];
const inMemory = (name: string) => Number(t.runner?.ownedProjections().find((p) => p.name === name)?.checkpoint ?? -1);
const append = async (count: number, type = 'E') => {
  let last = 0;
  for (let i = 0; i < count; i++) last = Number((await t.store.append(`s-${type}-${i}`, [{ type, data: {} }])).lastPosition);
  return last;
};

describe('checkpoint moves of batches that wrote nothing', () => {
  it('wait in memory and reach the row within the deferral time; a batch that writes commits its move at once', async () => {
    const quiet = defineProjection({ name: 'quiet', async handleBatch() {} });
    t.runner = await startRunner(t.db, { projections: [quiet, positionLog('log')], pollIntervalMs: 60_000 });
    const first = await append(3);
    // The first batch changes the row's state (catching_up -> running): written at once.
    await waitFor('the first batch written', async () => (await row('quiet'))?.p === first);
    const head = await append(3);
    await waitFor('quiet at the head in memory', () => inMemory('quiet') === head);
    // The log projection wrote: its move committed with its writes.
    await waitFor('the log written', async () => (await row('log'))?.p === head);
    expect((await row('quiet'))?.p).toBe(first);
    // No wake-up, a 60 s poll: the projector's own deadline writes the row.
    await waitFor('quiet written', async () => (await row('quiet'))?.p === head, DEFERRED_CHECKPOINT_MS * 5);
    expect((await row('quiet'))?.s).toBe('running');
  });

  it('a projection given none of its types for a while writes its row with its next event', async () => {
    t.runner = await startRunner(t.db, { projections: [{ ...positionLog('kept'), eventTypes: ['Kept'] }], pollIntervalMs: 60_000 });
    await append(1, 'Kept');
    await waitFor('first event', async () => (await readLog(t.db.pool, 'kept')).length === 1);
    await append(5, 'Other');
    const kept = await append(1, 'Kept');
    await waitFor('second event', async () => (await readLog(t.db.pool, 'kept')).length === 2);
    await waitFor('its row at the head', async () => (await row('kept'))?.p === kept);
    expect((await readLog(t.db.pool, 'kept')).map((r) => r.applied)).toEqual([1, 1]);
  });

  it('skip policy after moves in memory: the dead letter and the row start where the projector is', async () => {
    const picky = defineProjection({
      ...positionLog('picky'),
      eventTypes: ['Bad', 'Good'],
      onError: 'skip',
      async handle(event, tx) {
        if (event.type === 'Bad') throw new Error('refused');
        await positionLog('picky').handle!(event, tx);
      },
    });
    t.runner = await startRunner(t.db, { projections: [picky], handlerRetries: 0, pollIntervalMs: 60_000 });
    await append(1, 'Good');
    await waitFor('first event', async () => (await readLog(t.db.pool, 'picky')).length === 1);
    await append(4, 'Other');
    const bad = await append(1, 'Bad');
    const good = await append(1, 'Good');
    await waitFor('the event after the dead letter', async () => (await readLog(t.db.pool, 'picky')).length === 2);
    const { rows } = await t.db.pool.query(`SELECT global_position::int AS p FROM projection_dead_letters WHERE projection = 'picky'`);
    expect(rows.map((r) => r.p)).toEqual([bad]);
    await waitFor('the row at the head', async () => (await row('picky'))?.p === good);
    expect((await readLog(t.db.pool, 'picky')).map((r) => r.position)).toEqual([1, good]);
  });
});

describe('a lazily begun batch transaction', () => {
  it("never runs a handler's first statement outside the transaction when the build check fails, awaited or not", async () => {
    await t.db.pool.query('CREATE TABLE eager_log (position bigint)');
    const eager = defineProjection({
      name: 'eager',
      async handle(event, tx) {
        // Sent without waiting, then another: both queued behind BEGIN and the build check.
        void tx.query('INSERT INTO eager_log VALUES ($1)', [event.globalPosition.toString()]).catch(() => {});
        await tx.query('INSERT INTO eager_log VALUES ($1)', [event.globalPosition.toString()]);
      },
    });
    t.runner = await startRunner(t.db, { projections: [eager] });
    const first = await append(1);
    await waitFor('first event written', async () => (await t.db.pool.query('SELECT 1 FROM eager_log')).rowCount === 2);
    await waitFor('its row', async () => (await row('eager'))?.p === first);
    // The build is not this projector's any more (a switch away from it, as another instance would make it).
    await t.db.pool.query(`UPDATE projection_builds SET role = 'kept' WHERE slot = 'eager'`);
    await append(1);
    await waitFor('the projector stops', () => t.runner!.ownedProjections().length === 0);
    const { rows } = await t.db.pool.query('SELECT position::int AS p FROM eager_log ORDER BY 1');
    expect(rows.map((r) => r.p)).toEqual([first, first]);
    expect((await row('eager'))?.p).toBe(first);
  });
});

describe('a session that lost its prepared statements', () => {
  it("a handler's DEALLOCATE ALL: the session is given up, every event applied once, without waiting for a poll", async () => {
    let dropped = 0;
    const careless = defineProjection({
      ...positionLog('careless'),
      async handle(event, tx) {
        // Once: the batch's next EXECUTE of its own finds no prepared statement (26000), and the session is given up.
        if (dropped++ === 0) await tx.query('DEALLOCATE ALL');
        await positionLog('careless').handle!(event, tx);
      },
    });
    t.runner = await startRunner(t.db, { projections: [careless], pollIntervalMs: 60_000 });
    const positions: number[] = [];
    for (let i = 0; i < 6; i++) {
      positions.push(await append(1));
      await waitFor(`event ${i + 1} applied`, async () => (await readLog(t.db.pool, 'careless')).length === i + 1, 10_000);
    }
    expect((await readLog(t.db.pool, 'careless')).map((r) => [r.position, r.applied])).toEqual(positions.map((p) => [p, 1]));
  });
});

describe('moves in memory when the daemon is SIGKILLed', () => {
  const d = useDaemonFixture();

  it('every event the handler writes for is applied exactly once, in order, through kills', async () => {
    // A log of one type among many: most of its batches get none of its events and write nothing.
    const dir = mkdtempSync(path.join(os.tmpdir(), 'pr-deferred-'));
    const support = pathToFileURL(path.join(REPO, 'test/support/position-log.ts')).href;
    writeFileSync(
      path.join(dir, 'kept.mts'), // .mts: an ES module outside any package
      `import { positionLog } from '${support}';\nexport default { ...positionLog('kept'), eventTypes: ['Kept'] };\n`,
    );
    const store = new EventStore(d.db.pool);
    const spawn = () => {
      const daemon = startDaemon(d.db.url, ['--projections', dir, '--poll-interval', '200ms']);
      d.daemons.push(daemon);
      return daemon;
    };
    try {
      let daemon = spawn();
      const kept: number[] = [];
      const writing = new AbortController();
      const writer = (async () => {
        for (let i = 0; !writing.signal.aborted; i++) {
          const type = i % 10 === 0 ? 'Kept' : 'Other';
          const r = await store.append(`w-${i % 50}`, [{ type, data: { i } }]);
          if (type === 'Kept') kept.push(Number(r.lastPosition));
          await new Promise((r) => setTimeout(r, 2));
        }
      })();
      for (let kill = 0; kill < 4; kill++) {
        await new Promise((r) => setTimeout(r, 700 + Math.random() * 800));
        daemon.child.kill('SIGKILL');
        await daemon.exited;
        daemon = spawn();
      }
      writing.abort();
      await writer;
      expect(kept.length).toBeGreaterThan(20);
      await waitFor(
        'every Kept event applied',
        async () => (await d.db.pool.query('SELECT count(*)::int AS n FROM log_kept')).rows[0].n === kept.length,
        30_000,
      );
      await expectExactlyOnceInOrder(d.db.pool, 'kept', kept);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
