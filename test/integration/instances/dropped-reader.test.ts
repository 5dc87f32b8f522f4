import { describe, expect, it } from 'vitest';
import { defineProjection, type Projection, type Runner } from '../../../src/index.js';
import { quoteLiteral, storeNames } from '../../../src/db/identifiers.js';
import { heldLeaseCondition, leaseNamespace } from '../../../src/ownership/leases.js';
import { waitFor } from '../../support/database.js';
import { positionLog } from '../../support/position-log.js';
import { capturingLogger, startRunner, useRunnerFixture } from '../../support/runner.js';

/**
 * Found by a red team: a lost lease session drops every projection of its instance at once (the loops aborted, the
 * projections marked stopped and taken out of the shared reader) without waiting for their batches in flight. Such a
 * batch that then committed set its state again, which put the projection back into the instance's shared reader:
 * when another instance took the projection over, the first one's reader kept it for good, its checkpoint holding
 * pages down (and two more pages allowed per name). Now a projector's loop that ends takes its projection out.
 *
 * Here the other instance is this test's session, which takes the projection's lease as soon as the runner's lease
 * session is killed, so that the runner cannot claim it again.
 */
const t = useRunnerFixture();
const names = storeNames();

/** The projections an instance's shared reader holds pages for (a private field: what this test is about). */
function readerNames(runner: Runner): string[] {
  return [...(runner as unknown as { reader: { readers: Map<string, bigint> } }).reader.readers.keys()];
}

describe('a projection dropped with its lease session', () => {
  it('leaves the shared reader once its batch in flight has committed', async () => {
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    let holding = false;
    const log = positionLog('slow');
    const slow: Projection = defineProjection({
      ...log,
      async handleBatch(events, tx) {
        for (const e of events) await log.handle!(e, tx);
        if (events.some((e) => e.data.hold === true)) {
          holding = true;
          await gate;
        }
      },
    });
    const logger = capturingLogger();
    t.runner = await startRunner(t.db, { pollIntervalMs: 100, log: logger.log, projections: [slow] });
    await waitFor('the runner owns slow', () => t.runner!.ownedProjections().length === 1);
    const { lastPosition } = await t.store.append('s', [{ type: 'E', data: { hold: true } }]);
    await waitFor('the batch holds', () => holding);

    const other = await t.db.connect();
    try {
      const cond = heldLeaseCondition('l', quoteLiteral(leaseNamespace(names, 'projection')), quoteLiteral('slow'));
      const killed = await t.db.pool.query(`SELECT pg_terminate_backend(l.pid) FROM pg_locks l WHERE ${cond}`);
      expect(killed.rowCount).toBe(1);
      // The lease, taken here before the runner's reconnected session can take it again (waiting while it goes).
      await other.query('SELECT pg_advisory_lock(hashtext($1), hashtext($2))', [leaseNamespace(names, 'projection'), 'slow']);
      await waitFor('the runner dropped slow', () => logger.lines.some((l) => l.msg === 'stopping projection' && l.projection === 'slow'));
      expect(readerNames(t.runner)).toEqual([]);

      // The batch in flight commits (its compare-and-set still matches: nobody else wrote the row) and its loop ends.
      release();
      await waitFor(
        'the held batch committed',
        async () =>
          BigInt((await t.db.pool.query(`SELECT position::text AS p FROM projection_checkpoints WHERE name = 'slow'`)).rows[0].p) >=
          lastPosition,
      );
      await waitFor('no pages held for slow here', () => readerNames(t.runner!).length === 0, 5_000);
      expect(t.runner.ownedProjections()).toEqual([]);
    } finally {
      release();
      await other.end();
    }
  }, 60_000);
});
