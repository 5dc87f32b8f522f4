import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EventStore } from '../../../src/index.js';
import { startDaemon } from '../../support/child-runner.js';
import { expectExactlyOnceInOrder, waitUntilAllApplied } from '../../support/position-log.js';
import { startPrivateServer } from '../../support/private-server.js';

/**
 * The chaos suite: everything at once, one invariant. 8 writers (library appends and plain INSERTs, ~10 % rollbacks,
 * transactions held open for random times, a few longer than the gap timeout), two runner instances SIGKILLed at
 * random and restarted, one PostgreSQL restart in the middle. At the end every committed event is applied exactly
 * once by each projection, in global order except for the events flagged late.
 */

const GAP_TIMEOUT_MS = 1_000;
const CHAOS_MS = 25_000;

let server: Awaited<ReturnType<typeof startPrivateServer>>;
beforeAll(async () => {
  server = await startPrivateServer();
});
afterAll(() => server.stop());

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function writer(id: number, signal: AbortSignal, stats: { commits: number; rollbacks: number; longHolds: number; errors: number }) {
  let client: pg.Client | undefined;
  const store = new EventStore(server.pool);
  for (let i = 0; !signal.aborted; i++) {
    try {
      if (!client) {
        client = new pg.Client({ connectionString: server.url, application_name: `chaos-writer-${id}` });
        client.on('error', () => {});
        await client.connect();
      }
      await client.query('BEGIN');
      if (id % 2 === 0) {
        await client.query(`INSERT INTO events (stream_name, stream_position, type, data) VALUES ($1, 1, 'Plain', '{}')`, [`plain-${id}-${i}`]);
      } else {
        await store.append(`w${id}-${i % 10}`, [{ type: 'E', data: { i } }, { type: 'E', data: { i } }], { client });
      }
      const roll = Math.random();
      if (roll < 0.01) {
        stats.longHolds++;
        await sleep(GAP_TIMEOUT_MS * 1.5); // outlives the gap timeout: a late event
      } else if (roll < 0.1) {
        await sleep(Math.random() * 300);
      }
      if (Math.random() < 0.1) {
        await client.query('ROLLBACK');
        stats.rollbacks++;
      } else {
        await client.query('COMMIT');
        stats.commits++;
      }
    } catch {
      stats.errors++;
      await client?.end().catch(() => {});
      client = undefined;
      await sleep(200);
    }
    await sleep(Math.random() * 15);
  }
  await client?.end().catch(() => {});
}

describe('chaos', () => {
  it('every committed event applied exactly once, in order except late ones, through kills and a database restart', async () => {
    const args = ['--gap-timeout', `${GAP_TIMEOUT_MS}ms`, '--poll-interval', '250ms', '--batch-size', '20'];
    const spawnInstance = () => startDaemon(server.url, args, { PROJECTION_RUNNER_LOG_LEVEL: 'info' });
    const instances = [spawnInstance(), spawnInstance()];
    const outputs = () => instances.map((i) => i.output.join('')).join('');
    const allOutputs: string[] = [];
    const stats = { commits: 0, rollbacks: 0, longHolds: 0, errors: 0 };
    const writing = new AbortController();
    const writers = Array.from({ length: 8 }, (_, id) => writer(id, writing.signal, stats));

    let kills = 0;
    let restarted = false;
    const started = Date.now();
    while (Date.now() - started < CHAOS_MS) {
      await sleep(2_000 + Math.random() * 2_000);
      const victim = Math.floor(Math.random() * instances.length);
      allOutputs.push(instances[victim]!.output.join(''));
      instances[victim]!.child.kill('SIGKILL');
      await instances[victim]!.exited;
      kills++;
      instances[victim] = spawnInstance();
      if (!restarted && Date.now() - started > CHAOS_MS / 2) {
        restarted = true;
        await server.server.stop();
        await sleep(1_000);
        await server.server.restart();
      }
    }
    writing.abort();
    await Promise.all(writers);

    try {
      const { rows } = await server.pool.query('SELECT global_position::int AS p FROM events ORDER BY 1');
      const committed = rows.map((r) => r.p);
      await waitUntilAllApplied(server.pool, committed, ['chaos_a', 'chaos_b'], 60_000);
      const report: string[] = [];
      for (const name of ['chaos_a', 'chaos_b']) {
        const log = await expectExactlyOnceInOrder(server.pool, name, committed);
        report.push(`${name}: ${log.length} applied, ${log.filter((r) => r.late).length} late`);
      }
      const { rows: gaps } = await server.pool.query(
        'SELECT coalesce(resolution, \'open\') AS r, count(*)::int AS n FROM projection_gaps GROUP BY 1 ORDER BY 1',
      );
      const text = allOutputs.join('') + outputs();
      const starts = (text.match(/"msg":"projection started"/g) ?? []).length;
      console.info(
        [
          `chaos figures: ${committed.length} committed events, ${stats.commits} commits, ${stats.rollbacks} rollbacks, ` +
            `${stats.longHolds} holds past the gap timeout, ${stats.errors} writer errors (database restart)`,
          `gaps by resolution: ${gaps.map((g) => `${g.r}=${g.n}`).join(' ')}`,
          `kills: ${kills}, database restarts: 1, ownership takeovers (projection starts beyond the first two): ${starts - 2}`,
          ...report,
        ].join('\n'),
      );
      expect(kills).toBeGreaterThan(3);
      expect(restarted).toBe(true);
    } finally {
      for (const i of instances) i.child.kill('SIGTERM');
      await Promise.all(instances.map((i) => i.exited));
    }
  }, 180_000);
});
