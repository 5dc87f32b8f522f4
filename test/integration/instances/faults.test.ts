import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EventStore } from '../../../src/index.js';
import { freePort } from '../../../src/db/postgres-server.js';
import { waitFor } from '../../support/database.js';
import { startDaemon } from '../../support/child-runner.js';
import { readLog } from '../../support/position-log.js';
import { startPrivateServer } from '../../support/private-server.js';

let pg: Awaited<ReturnType<typeof startPrivateServer>>;
beforeAll(async () => {
  pg = await startPrivateServer();
});
afterAll(() => pg.stop());

const status = async (port: number, path: string) => {
  try {
    return (await fetch(`http://127.0.0.1:${port}${path}`)).status;
  } catch {
    return 0;
  }
};

describe('faults under a running daemon', () => {
  it('rides out a PostgreSQL restart: logs, retries, reconnects, catches up; health says the truth meanwhile', async () => {
    const port = await freePort();
    const daemon = startDaemon(pg.url, ['--metrics-port', String(port), '--metrics-host', '127.0.0.1', '--poll-interval', '200ms']);
    try {
      const store = new EventStore(pg.pool);
      for (let i = 0; i < 10; i++) await store.append(`before-${i}`, [{ type: 'E', data: {} }]);
      await waitFor('applied before', async () => (await readLog(pg.pool, 'chaos_a')).length === 10, 30_000);
      expect(await status(port, '/readyz')).toBe(200);

      await pg.server.stop();
      await waitFor('readyz says unavailable', async () => (await status(port, '/readyz')) === 503, 15_000);
      expect(await status(port, '/healthz')).toBe(200); // the loops are alive, retrying
      await new Promise((r) => setTimeout(r, 1_500));
      await pg.server.restart();

      for (let i = 0; i < 10; i++) await store.append(`after-${i}`, [{ type: 'E', data: {} }]);
      await waitFor('caught up after the restart', async () => (await readLog(pg.pool, 'chaos_a')).length === 20, 30_000);
      await waitFor('readyz back', async () => (await status(port, '/readyz')) === 200, 15_000);
      expect((await readLog(pg.pool, 'chaos_b')).every((r) => r.applied === 1)).toBe(true);
      expect(daemon.child.exitCode).toBeNull();
      expect(daemon.output.join('')).toMatch(/retrying/);
      expect(daemon.output.join('')).not.toContain('private-secret-pw');
    } finally {
      daemon.child.kill('SIGTERM');
      expect(await daemon.exited).toBe(0);
    }
  }, 90_000);

  it('keeps applying by polling when the listener connection is killed, and the listener comes back', async () => {
    const daemon = startDaemon(pg.url, ['--poll-interval', '300ms', '--log-level', 'info']);
    try {
      const store = new EventStore(pg.pool);
      const base = (await readLog(pg.pool, 'chaos_a')).length;
      await waitFor('listener up', () => daemon.output.join('').includes('notification listener connected'), 30_000);
      const { rows } = await pg.pool.query(
        "SELECT pg_terminate_backend(pid) AS killed FROM pg_stat_activity WHERE application_name = 'projection-runner:listener'",
      );
      expect(rows).toHaveLength(1);
      await store.append('while-listener-down', [{ type: 'E', data: {} }]);
      await waitFor('applied by polling', async () => (await readLog(pg.pool, 'chaos_a')).length === base + 1, 15_000);
      await waitFor(
        'listener back',
        async () => {
          const { rows: back } = await pg.pool.query(
            "SELECT 1 FROM pg_stat_activity WHERE application_name = 'projection-runner:listener'",
          );
          return back.length === 1;
        },
        20_000,
      );
    } finally {
      daemon.child.kill('SIGTERM');
      expect(await daemon.exited).toBe(0);
    }
  }, 60_000);
});
