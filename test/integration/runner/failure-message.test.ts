import { describe, expect, it } from 'vitest';
import type { Projection } from '../../../src/index.js';
import { waitFor } from '../../support/database.js';
import { startRunner, useRunnerFixture } from '../../support/runner.js';

/**
 * A handler's error message is written to the database (the failure record, a dead letter's error). PostgreSQL
 * refuses a NUL in text (22021) and the escape \u0000 in jsonb (22P05), and a lone surrogate cannot be encoded: every
 * write of such a failure failed, the failure path retried it for ever, and the projection never reached `failed` nor
 * went past the event (found by a red-team helper). The message is stored with the character made visible.
 */
const t = useRunnerFixture();

const failing = (name: string, message: string): Projection => ({
  name,
  async handle() {
    throw new Error(message);
  },
});

const row = async (name: string) =>
  (await t.db.pool.query(`SELECT position::int, state, last_error FROM projection_checkpoints WHERE name = $1`, [name])).rows[0];

describe('a handler failure whose message the database cannot store as it is', () => {
  it('stop policy: the projection ends failed at the event, the NUL written as \\u0000', async () => {
    await t.store.append('s-1', [{ type: 'Booked', data: {} }]);
    t.runner = await startRunner(t.db, { projections: [failing('nul_stop', 'bad byte \u0000 here')], handlerRetries: 0, onError: 'stop' });
    await waitFor('failed', async () => (await row('nul_stop'))?.state === 'failed', 10_000);
    expect((await row('nul_stop')).last_error).toMatchObject({ position: '1', message: 'bad byte \\u0000 here' });
  });

  it('skip policy: the event is dead-lettered once and the checkpoint moves past it', async () => {
    await t.store.append('s-1', [{ type: 'Booked', data: {} }]);
    t.runner = await startRunner(t.db, {
      projections: [failing('nul_skip', 'lone \ud800 surrogate and \u0000')],
      handlerRetries: 0,
      onError: 'skip',
    });
    await waitFor('past the event', async () => (await row('nul_skip'))?.position === 1, 10_000);
    const { rows } = await t.db.pool.query(`SELECT error FROM projection_dead_letters WHERE projection = 'nul_skip'`);
    expect(rows).toEqual([{ error: 'lone \ufffd surrogate and \\u0000' }]);
  });
});
