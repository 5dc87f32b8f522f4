import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { EventStore } from '../../../src/index.js';
import { startDaemon, useDaemonFixture } from '../../support/child-runner.js';
import { waitFor } from '../../support/database.js';

/**
 * Attack: ownership balancing during a blue/green overlap. The old release (module version 1 of `acct`) and the new
 * release (module version 2 of `acct`, the same code of `other`) each count only the units *they* can run when they
 * compute their fair share: each settles on ceil(2 units / 2 instances) = 1 — but three units exist (acct v1 live,
 * acct@v2 building, other). One of them is run by nobody for as long as the overlap lasts.
 * Separate processes: in-process runners share one owner name (host/pid), so they count as one instance.
 */
const fixture = useDaemonFixture();
let dir: string;

beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'attack-balance-'));
  const module = (name: string, version: string) => `export default {
  name: '${name}',
  version: ${version},
  async setup(db) { await db.query('CREATE TABLE IF NOT EXISTS ${name}_count (id int PRIMARY KEY, n bigint NOT NULL)'); },
  async handle(event, tx) {
    await tx.query('INSERT INTO ${name}_count (id, n) VALUES (1, 1) ON CONFLICT (id) DO UPDATE SET n = ${name}_count.n + 1');
  },
};
`;
  await writeFile(path.join(dir, 'acct.mjs'), module('acct', "Number(process.env.ACCT_VERSION ?? '1')"));
  await writeFile(path.join(dir, 'other.mjs'), module('other', '1'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

const checkpoints = async () =>
  Object.fromEntries(
    (
      await fixture.db.pool.query<{ name: string; position: string; owner: string | null }>(
        'SELECT name, position::text, owner FROM projection_checkpoints ORDER BY name',
      )
    ).rows.map((r) => [r.name, Number(r.position)]),
  );

function daemon(version: number) {
  const d = startDaemon(fixture.db.url, ['--projections', dir, '--switch', 'manual'], { ACCT_VERSION: String(version) });
  fixture.daemons.push(d);
  return d;
}

describe('attack: balancing an old and a new release side by side (daemons)', () => {
  it('every unit (acct v1 live, acct@v2 being built, other) is run by someone during the overlap', async () => {
    const { db } = fixture;
    const store = new EventStore(db.pool);
    for (let i = 0; i < 20; i++) await store.append(`s-${i % 4}`, [{ type: 'E', data: {} }]);
    daemon(1);
    await waitFor(
      'old release caught up',
      async () => {
        const c = await checkpoints();
        return c.acct === 20 && c.other === 20;
      },
      30_000,
    );
    daemon(2);
    await waitFor('v2 started', async () => (await checkpoints())['acct@v2'] !== undefined, 30_000);
    // Let the two instances settle their shares, then keep appending.
    await new Promise((r) => setTimeout(r, 3_000));
    for (let i = 0; i < 20; i++) await store.append(`s-${i % 4}`, [{ type: 'E', data: {} }]);
    let last: Record<string, number> = {};
    try {
      await waitFor(
        'all three units at the head',
        async () => {
          last = await checkpoints();
          return last.acct === 40 && last['acct@v2'] === 40 && last.other === 40;
        },
        15_000,
      );
    } catch {
      // reported by the assertion below
    }
    const rows = (await db.pool.query('SELECT name, position::int, state, owner FROM projection_checkpoints ORDER BY name')).rows;
    console.info('checkpoint rows at the end:', JSON.stringify(rows));
    expect({ checkpoints: last, rows }).toMatchObject({ checkpoints: { acct: 40, 'acct@v2': 40, other: 40 } });
  }, 90_000);
});
