import { describe, expect, it } from 'vitest';
import { defineProjection, type Projection } from '../../../src/index.js';
import { readiness } from '../../../src/metrics/server.js';
import type { Runner } from '../../../src/runner/runner.js';
import { waitFor } from '../../support/database.js';
import { positionLog, readLog } from '../../support/position-log.js';
import { startRunner, useRunnerFixture } from '../../support/runner.js';
import { startSplittingProxy } from '../../support/splitting-proxy.js';

/**
 * Every way a batch can fail ends in one of two places. These are the handler faults that used to loop for ever as
 * "batch failed unexpectedly" (or as database faults): each must end with the projection `failed`, said by /readyz
 * and the state metric, with handler_errors_total counting every attempt and db_errors_total not moving.
 */
const t = useRunnerFixture();

const checkpointRow = async (name: string) =>
  (await t.db.pool.query('SELECT position::int, state, last_error FROM projection_checkpoints WHERE name = $1', [name])).rows[0];

const counter = async (runner: Runner, metric: 'handlerErrors' | 'deadLetters', projection: string) =>
  (await runner.metrics[metric].get()).values.find((v) => v.labels.projection === projection)?.value ?? 0;

const batchDbErrors = async (runner: Runner) =>
  (await runner.metrics.dbErrors.get()).values.find((v) => v.labels.operation === 'batch')?.value ?? 0;

const failedGauge = async (runner: Runner, projection: string) =>
  (await runner.metrics.projectionState.get()).values.find((v) => v.labels.projection === projection && v.labels.state === 'failed')?.value;

/** Three fine events, a poison one, two more: the projection must stop failed at the poison, position 4. */
async function appendWithPoison() {
  for (let i = 1; i <= 6; i++) await t.store.append(`s-${i}`, [{ type: i === 4 ? 'Poison' : 'Fine', data: { i } }]);
}

async function expectFailedAt(projection: Projection, position: number, message: RegExp, connectionString = t.db.url) {
  t.runner = await startRunner(t.db, { projections: [projection], handlerRetries: 1, batchSize: 100, connectionString });
  // The row is committed a moment before the runner has read the COMMIT's reply and set the state it reports.
  await waitFor(`${projection.name} failed`, async () => (await checkpointRow(projection.name))?.state === 'failed');
  await waitFor(`${projection.name} reported failed`, () =>
    t.runner!.ownedProjections().some((p) => p.name === projection.name && p.state === 'failed'),
  );
  const row = await checkpointRow(projection.name);
  expect(row.last_error.position).toBe(String(position));
  expect(row.last_error.message).toMatch(message);
  expect(row.position).toBe(position - 1);
  // Said by /readyz and by the state metric; every attempt counted as a handler error, none as a database error.
  const ready = await readiness(t.runner);
  expect(ready.ok).toBe(false);
  expect(ready.reasons).toContain(`projection ${projection.name} is failed`);
  expect(await failedGauge(t.runner, projection.name)).toBe(1);
  expect(await counter(t.runner, 'handlerErrors', projection.name)).toBe(2); // the first try and one retry
  expect(await batchDbErrors(t.runner)).toBe(0);
  return row;
}

/** A handler with the bug under test: it catches a database error on `type` and carries on in the aborted transaction. */
const swallowingAt = (type: string) =>
  defineProjection({
    name: 'swallowing',
    async handle(event, tx) {
      if (event.type !== type) return;
      try {
        await tx.query('SELECT 1 / 0');
      } catch {
        // carrying on without a savepoint
      }
    },
  });

describe('handler faults end in failed, never in an endless loop', () => {
  it('a handler that swallows a database error without a savepoint (the checkpoint update would get 25P02)', async () => {
    await appendWithPoison();
    await expectFailedAt(swallowingAt('Poison'), 4, /left the transaction aborted: it swallowed a database error without a savepoint/);
  });

  it('the same, when the status after the error reaches the runner in a later read (a busy network, a pooler)', async () => {
    // Without waiting for that status, the swallowed error was blamed on event 5 or 6 (whichever handler returned
    // after it arrived), and settling back to 4 counted a third handler error.
    const proxy = await startSplittingProxy(t.db.url, 20);
    try {
      await appendWithPoison();
      await expectFailedAt(swallowingAt('Poison'), 4, /left the transaction aborted/, proxy.url);
    } finally {
      await t.runner?.stop();
      t.runner = undefined;
      await proxy.stop();
    }
  });

  it('handleBatch failing only as a whole (a multi-row upsert meeting one key twice: 21000) is a handler fault on the batch', async () => {
    await t.db.pool.query('CREATE TABLE per_stream (stream text PRIMARY KEY, n int NOT NULL)');
    // Events 1 and 2 share a stream: one statement for both meets the key twice; each alone is fine.
    await t.store.append('dup', [
      { type: 'E', data: {} },
      { type: 'E', data: {} },
    ]);
    await t.store.append('other', [{ type: 'E', data: {} }]);
    const upsert = defineProjection({
      name: 'upsert',
      async handleBatch(events, tx) {
        await tx.query(
          `INSERT INTO per_stream (stream, n) SELECT s, 1 FROM unnest($1::text[]) AS s
           ON CONFLICT (stream) DO UPDATE SET n = per_stream.n + 1`,
          [events.map((e) => e.streamName)],
        );
      },
    });
    const row = await expectFailedAt(
      upsert,
      1,
      /handleBatch failed on the batch of 3 events as a whole but on none of them alone: .*ON CONFLICT DO UPDATE command cannot affect row a second time/,
    );
    expect(row.position).toBe(0);
    expect((await t.db.pool.query('SELECT count(*)::int AS n FROM per_stream')).rows[0].n).toBe(0);
  });

  it("a handler's own error with a network code and a connection-like message is the handler's, not the database's", async () => {
    await appendWithPoison();
    const calling = defineProjection({
      name: 'calling',
      async handle(event) {
        if (event.type === 'Poison') {
          // What an HTTP client throws: the code and message the database-retry rules used to match.
          throw Object.assign(new Error('Connection terminated: connect ECONNREFUSED 10.0.0.1:443'), { code: 'ECONNREFUSED' });
        }
      },
    });
    await expectFailedAt(calling, 4, /ECONNREFUSED/);
  });

  it.each([
    ['an object without a prototype', () => Object.create(null), /^\{\}|\[object Object\]$/],
    ['a string', () => 'plain string thrown', /^plain string thrown$/],
    ['undefined', () => undefined, /^undefined$/],
  ])('a handler that throws %s', async (_label, thrown, message) => {
    await appendWithPoison();
    const odd = defineProjection({
      name: 'odd',
      async handle(event) {
        if (event.type === 'Poison') throw thrown();
      },
    });
    await expectFailedAt(odd, 4, message);
  });

  it('a connection that really breaks under the handler is a database fault: retried, not counted against the handler', async () => {
    await appendWithPoison();
    let killed = false;
    const killing = defineProjection({
      name: 'killing',
      async handle(event, tx) {
        await tx.query('CREATE TABLE IF NOT EXISTS killing_log (position bigint PRIMARY KEY)');
        if (event.type === 'Poison' && !killed) {
          killed = true;
          // The server ends this session: the client is unusable afterwards, whatever the error says.
          await tx.query('SELECT pg_terminate_backend(pg_backend_pid())');
        }
        await tx.query('INSERT INTO killing_log VALUES ($1)', [event.globalPosition.toString()]);
      },
    });
    t.runner = await startRunner(t.db, { projections: [killing], handlerRetries: 0 });
    await waitFor('all applied', async () => (await checkpointRow('killing'))?.position === 6);
    expect(killed).toBe(true);
    expect((await t.db.pool.query('SELECT count(*)::int AS n FROM killing_log')).rows[0].n).toBe(6);
    expect(await batchDbErrors(t.runner)).toBeGreaterThan(0);
    expect(await counter(t.runner, 'handlerErrors', 'killing')).toBe(0);
  });

  it('other projections keep going while one is failed', async () => {
    await appendWithPoison();
    const failing = positionLog('fails', { failAt: (e) => e.type === 'Poison' });
    t.runner = await startRunner(t.db, { projections: [failing, positionLog('fine')], handlerRetries: 0 });
    await waitFor('fails failed', async () => (await checkpointRow('fails'))?.state === 'failed');
    await waitFor('fine caught up', async () => (await readLog(t.db.pool, 'fine')).length === 6);
    expect((await readLog(t.db.pool, 'fails')).map((r) => r.position)).toEqual([1, 2, 3]);
  });
});

describe('error policy skip', () => {
  it('dead-letters the event in the transaction that moves the checkpoint past it, counts it, and goes on', async () => {
    await appendWithPoison();
    const skipping = { ...positionLog('skipping', { failAt: (e) => e.type === 'Poison' }), onError: 'skip' as const };
    t.runner = await startRunner(t.db, { projections: [skipping], handlerRetries: 1 });
    await waitFor('past the poison', async () => (await checkpointRow('skipping'))?.position === 6);
    expect((await readLog(t.db.pool, 'skipping')).map((r) => [r.position, r.applied])).toEqual([
      [1, 1],
      [2, 1],
      [3, 1],
      [5, 1],
      [6, 1],
    ]);
    const { rows } = await t.db.pool.query(
      'SELECT global_position::int AS position, type, error, attempts, reason, redelivered_at FROM projection_dead_letters',
    );
    expect(rows).toEqual([{ position: 4, type: 'Poison', error: 'refusing event 4', attempts: 2, reason: 'policy', redelivered_at: null }]);
    expect(await counter(t.runner, 'deadLetters', 'skipping')).toBe(1);
    expect((await checkpointRow('skipping')).state).toBe('running');
    expect((await readiness(t.runner)).ok).toBe(true);
  });

  it('--on-error (RunnerOptions.onError) overrides the module: stop although the module says skip', async () => {
    await appendWithPoison();
    const skipping = { ...positionLog('overridden', { failAt: (e) => e.type === 'Poison' }), onError: 'skip' as const };
    t.runner = await startRunner(t.db, { projections: [skipping], handlerRetries: 0, onError: 'stop' });
    await waitFor('failed', async () => (await checkpointRow('overridden'))?.state === 'failed');
    expect((await t.db.pool.query('SELECT count(*)::int AS n FROM projection_dead_letters')).rows[0].n).toBe(0);
  });
});
