import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { liveness, startMetricsServer, type MetricsServer } from '../../../src/metrics/server.js';
import { waitFor } from '../../support/database.js';
import { positionLog } from '../../support/position-log.js';
import { startRunner, useRunnerFixture } from '../../support/runner.js';

const t = useRunnerFixture();
let server: MetricsServer | undefined;

// Registered after the fixture, so it runs before the fixture stops the runner.
afterEach(async () => {
  await server?.close();
  server = undefined;
});

/** Reads one sample from the registry (scrape-time collectors included). */
async function sample(name: string, labels: Record<string, string> = {}): Promise<number | undefined> {
  const metric = t.runner!.metrics.registry.getSingleMetric(name)!;
  const data = await metric.get();
  const match = data.values.find((v) => Object.entries(labels).every(([k, val]) => v.labels[k] === val));
  return match?.value;
}

describe('metrics move as the runner works', () => {
  it('positions, lag, applied, gaps (open, timed out, late), handler errors, state', async () => {
    let poison = true;
    t.runner = await startRunner(t.db, {
      projections: [positionLog('main'), positionLog('fragile', { failAt: (e) => poison && e.type === 'Poison' })],
      gapTimeoutMs: 800,
      handlerRetries: 0,
    });
    await t.store.append('a', [
      { type: 'E', data: {} },
      { type: 'E', data: {} },
    ]);
    await waitFor('applied', async () => (await sample('projection_runner_events_applied_total', { projection: 'main' })) === 2);
    expect(await sample('projection_runner_head_position')).toBe(2);
    expect(await sample('projection_runner_high_water_position')).toBe(2);
    expect(await sample('projection_runner_checkpoint_position', { projection: 'main' })).toBe(2);
    await waitFor('lag 0', async () => (await sample('projection_runner_lag_events', { projection: 'main' })) === 0);
    expect(await sample('projection_runner_lag_seconds', { projection: 'main' })).toBe(0);
    expect(await sample('projection_runner_projection_state', { projection: 'main', state: 'running' })).toBe(1);
    expect(await sample('projection_runner_projection_state', { projection: 'main', state: 'failed' })).toBe(0);

    // Hold a gap: it is open, it ages, then it times out.
    const slow = await t.db.connect();
    await slow.query('BEGIN');
    await t.store.append('slow', [{ type: 'E', data: {} }], { client: slow });
    await t.store.append('b', [{ type: 'E', data: {} }]);
    await waitFor('gap open', async () => (await sample('projection_runner_gaps_open')) === 1);
    await waitFor('gap ages', async () => ((await sample('projection_runner_gap_oldest_age_seconds')) ?? 0) > 0.2);
    expect(await sample('projection_runner_head_position')).toBe(4);
    expect(await sample('projection_runner_high_water_position')).toBe(2);
    await waitFor('timed out', async () => (await sample('projection_runner_gaps_resolved_total', { resolution: 'timed_out' })) === 1);
    expect(await sample('projection_runner_gaps_open')).toBe(0);
    expect(await sample('projection_runner_gap_oldest_age_seconds')).toBe(0);
    const wait = await t.runner.metrics.gapWait.get();
    const count = wait.values.find(
      (v) => v.metricName === 'projection_runner_gap_wait_seconds_count' && v.labels.resolution === 'timed_out',
    );
    expect(count?.value).toBe(1);

    // The held transaction commits after all: a late event.
    await slow.query('COMMIT');
    await waitFor('late', async () => (await sample('projection_runner_late_events_total')) === 1);

    // A handler that fails: errors counted, state failed.
    await t.store.append('c', [{ type: 'Poison', data: {} }]);
    await waitFor(
      'failed',
      async () => (await sample('projection_runner_projection_state', { projection: 'fragile', state: 'failed' })) === 1,
    );
    expect(await sample('projection_runner_handler_errors_total', { projection: 'fragile' })).toBe(1);
    expect(await sample('projection_runner_handler_errors_total', { projection: 'main' })).toBe(0);
    expect(await sample('projection_runner_lag_events', { projection: 'fragile' })).toBeGreaterThan(0);
    expect(
      ((await sample('projection_runner_notifications_total')) ?? 0) + ((await sample('projection_runner_polls_total')) ?? 0),
    ).toBeGreaterThan(0);
    const batches = (await t.runner.metrics.batchDuration.get()).values.find(
      (v) => v.metricName === 'projection_runner_batch_duration_seconds_count' && v.labels.projection === 'main',
    );
    expect(batches?.value).toBeGreaterThan(0);
    poison = false;
  });
});

describe('/metrics, /healthz, /readyz', () => {
  const get = async (port: number, path: string) => {
    const res = await fetch(`http://127.0.0.1:${port}${path}`);
    return { status: res.status, body: await res.text() };
  };

  it('serve metrics, liveness, readiness (503 with reasons when a projection failed), 404 otherwise', async () => {
    t.runner = await startRunner(t.db, { projections: [positionLog('ok'), positionLog('bad', { failAt: () => true })], handlerRetries: 0 });
    server = await startMetricsServer(t.runner, '127.0.0.1', 0, 60_000);
    const metrics = await get(server.port, '/metrics');
    expect(metrics.status).toBe(200);
    expect(metrics.body).toContain('projection_runner_high_water_position');
    expect(metrics.body).toContain('process_resident_memory_bytes');
    expect((await get(server.port, '/healthz')).status).toBe(200);
    expect((await get(server.port, '/readyz')).status).toBe(200);
    expect((await get(server.port, '/nope')).status).toBe(404);

    await t.store.append('x', [{ type: 'E', data: {} }]);
    await waitFor('bad failed', async () => (await get(server!.port, '/readyz')).status === 503);
    const ready = await get(server.port, '/readyz');
    expect(JSON.parse(ready.body)).toEqual({ ok: false, reasons: ['projection bad is failed'] });
    expect((await get(server.port, '/healthz')).status).toBe(200);
  });

  it('survive malformed requests', async () => {
    t.runner = await startRunner(t.db, { projections: [positionLog('ok')] });
    server = await startMetricsServer(t.runner, '127.0.0.1', 0, 60_000);
    for (const garbage of ['GARBAGE\r\n\r\n', 'GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n', '\u0000\u0001\u0002']) {
      await new Promise<void>((resolve) => {
        const socket = net.connect(server!.port, '127.0.0.1', () => socket.end(garbage));
        socket.on('close', () => resolve());
        socket.on('error', () => resolve());
        socket.resume();
      });
    }
    expect((await fetch(`http://127.0.0.1:${server.port}/healthz`)).status).toBe(200);
    expect((await fetch(`http://127.0.0.1:${server.port}/metrics`, { method: 'POST' })).status).toBe(405);
  });

  it('liveness turns 503-worthy when a loop has not made a pass within the watchdog limit', async () => {
    t.runner = await startRunner(t.db, { projections: [positionLog('ok')] });
    await waitFor('projection owned', () => t.runner!.ownedProjections().length === 1);
    expect(liveness(t.runner, 60_000).ok).toBe(true);
    const report = liveness(t.runner, 60_000, Date.now() + 120_000);
    expect(report.ok).toBe(false);
    expect(report.reasons.join('\n')).toMatch(/high-water loop has not completed a pass/);
    expect(report.reasons.join('\n')).toMatch(/projection ok has not completed a pass/);
  });
});
