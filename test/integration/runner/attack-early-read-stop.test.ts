import { describe, expect, it } from 'vitest';
import { defineProjection, type Projection, type Runner } from '../../../src/index.js';
import { sleep } from '../../../src/shared/time.js';
import { committedPositions, expectExactlyOnceInOrder, positionLog, waitUntilAllApplied } from '../../support/position-log.js';
import { capturingLogger, startRunner, useRunnerFixture } from '../../support/runner.js';

/**
 * Attack (red team): live batches read before they take a slot (runBatch's `early`). One slot for six projections whose
 * handlers write and hold their transaction (so each next batch begins ahead and its early read is left pending while
 * it queues for the slot), live appends, runner sessions killed while active, and the runner stopped and started again
 * mid-stream. Every event exactly once in order, every stop returns (a wedged one ends in the test's timeout), no unhandled
 * rejection.
 */
const t = useRunnerFixture();

const slowLog = (name: string): Projection => {
  const log = positionLog(name);
  return defineProjection({
    ...log,
    async handleBatch(events, tx) {
      await tx.query('SELECT pg_sleep(0.01)');
      for (const e of events) await log.handle!(e, tx);
    },
  });
};

describe('live batches that read before their slot: one slot, kills and stops', () => {
  it('exactly once in order; every stop returns; nothing unhandled', async () => {
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown) => unhandled.push(reason);
    process.on('unhandledRejection', onUnhandled);
    const names = ['a', 'b', 'c', 'd', 'e', 'f'];
    const { log, lines } = capturingLogger();
    let runner: Runner | undefined;
    const start = async () =>
      startRunner(t.db, {
        log,
        pollIntervalMs: 200,
        batchSize: 4,
        maxConcurrentBatches: 1,
        handlerRetries: 1,
        projections: names.map(slowLog),
      });
    try {
      runner = await start();
      let writing = true;
      const writer = (async () => {
        for (let i = 0; writing; i++) {
          await t.store.append(`s-${i % 7}`, [{ type: 'E', data: { i } }]);
          if (i % 3 === 0) await sleep(2);
        }
      })();
      for (let k = 0; k < 10; k++) {
        await sleep(250);
        if (k % 3 === 2) {
          await runner.stop();
          runner = await start();
        } else {
          await t.db.pool.query(
            `SELECT count(pg_terminate_backend(pid))::int FROM pg_stat_activity
              WHERE datname = current_database() AND application_name = 'projection-runner:runner' AND state = 'active'`,
          );
        }
      }
      writing = false;
      await writer;
      const committed = await committedPositions(t.db.pool);
      await waitUntilAllApplied(t.db.pool, committed, names, 60_000);
      await runner.stop();
      runner = undefined;
      for (const name of names) await expectExactlyOnceInOrder(t.db.pool, name, committed);
      expect(committed.length).toBeGreaterThan(200);
      await sleep(200);
      expect(unhandled).toEqual([]);
      // Nothing logged as a handler failure: the kills are database faults.
      expect(lines.filter((l) => String(l.msg).includes('handler failed') || String(l.msg).includes('projection failed'))).toEqual([]);
    } finally {
      process.off('unhandledRejection', onUnhandled);
      await runner?.stop();
    }
  }, 180_000);
});
