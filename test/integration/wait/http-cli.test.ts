import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { EventStore } from '../../../src/index.js';
import { freePort } from '../../../src/db/postgres-server.js';
import { waitFor } from '../../support/database.js';
import { REPO, runCli, startDaemon, useDaemonFixture } from '../../support/child-runner.js';

const POISON = path.join(REPO, 'test/fixtures/poison-projections');

/** The two other doors to the waiter: the daemon's `GET /wait` and `projection-runner wait`, each outcome. */
describe('read your own writes over HTTP and the CLI', () => {
  const t = useDaemonFixture();

  async function daemon() {
    const port = await freePort();
    const d = startDaemon(t.db.url, ['--projections', POISON, '--metrics-port', String(port), '--metrics-host', '127.0.0.1']);
    t.daemons.push(d);
    await waitFor('daemon healthy', async () => (await fetch(`http://127.0.0.1:${port}/healthz`).catch(() => undefined))?.ok, 30_000);
    // A projection is known to waiters once its projector has started (its checkpoint row).
    await waitFor('the projection started', async () => (await t.db.pool.query(`SELECT 1 FROM projection_checkpoints`)).rowCount, 30_000);
    return (query: string) =>
      fetch(`http://127.0.0.1:${port}/wait?${query}`).then(async (r) => ({ status: r.status, body: await r.json() }));
  }

  it('GET /wait: 200 reached (the read model has it), 400 bad input, 504 with the reason, 409 failed', async () => {
    const wait = await daemon();
    const store = new EventStore(t.db.pool);
    const { lastPosition } = await store.append('s', [{ type: 'Ping', data: {} }]);
    const ok = await wait(`position=${lastPosition}&projection=poisoned&timeout=30s`);
    expect(ok).toEqual({ status: 200, body: { position: Number(lastPosition), projections: { poisoned: expect.any(Number) } } });
    const { rowCount } = await t.db.pool.query('SELECT 1 FROM log_poisoned WHERE position = $1', [lastPosition.toString()]);
    expect(rowCount).toBe(1);

    for (const bad of ['position=abc', 'position=-1', '', `position=${lastPosition}&timeout=5x`, `position=${lastPosition}&timeout=2h`]) {
      expect((await wait(bad)).status, bad).toBe(400);
    }
    expect(await wait(`position=${lastPosition}&projection=nope`)).toMatchObject({ status: 400, body: { error: 'unknown_projection' } });

    const never = await wait(`position=${lastPosition + 1000n}&timeout=300ms`);
    expect(never.status).toBe(504);
    expect(never.body.message).toContain('was never seen committed');

    // The next event is poisoned: the projection fails at it, and a wait for it is answered with 409 well before its timeout.
    const next = lastPosition + 1n;
    await t.db.pool.query('INSERT INTO poison_positions VALUES ($1)', [next.toString()]);
    await store.append('s', [{ type: 'Ping', data: {} }]);
    const failed = await wait(`position=${next}&timeout=60s`);
    expect(failed).toMatchObject({ status: 409, body: { error: 'projection_failed', projection: 'poisoned', position: Number(next) } });
  });

  it('projection-runner wait: exit 0 when applied, 1 with the reason otherwise', async () => {
    await daemon();
    const store = new EventStore(t.db.pool);
    const { lastPosition } = await store.append('s', [{ type: 'Ping', data: {} }]);
    const env = { DATABASE_URL: t.db.url };
    const ok = await runCli(['wait', String(lastPosition), '--projection', 'poisoned', '--timeout', '30s', '--json'], env);
    expect(ok.code, ok.stderr).toBe(0);
    expect(JSON.parse(ok.stdout)).toEqual({ position: String(lastPosition), projections: { poisoned: expect.any(String) } });
    const late = await runCli(['wait', String(lastPosition + 1000n), '--timeout', '300ms'], env);
    expect(late.code).toBe(1);
    expect(late.stderr).toContain('was never seen committed');
    expect(late.stderr.trim().split('\n')).toHaveLength(1);
    const unknown = await runCli(['wait', String(lastPosition), '--projection', 'nope'], env);
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toContain('unknown projection "nope"');
    const bad = await runCli(['wait', 'abc'], env);
    expect(bad.code).toBe(2);
  }, 180_000);
});
