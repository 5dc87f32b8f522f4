import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EventStore } from '../../../src/index.js';
import { freePort } from '../../../src/db/postgres-server.js';
import { createTestDatabase, waitFor, type TestDatabase } from '../../support/database.js';
import { REPO, startDaemon } from '../../support/child-runner.js';
import { dashboardExpressions } from '../../support/metric-names.js';

function which(tool: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${tool}`]);
    return true;
  } catch {
    return false;
  }
}

const available = which('prometheus') && which('promtool');
if (!available) {
  console.warn(
    '\n*** SKIPPED: the Prometheus end-to-end test needs `prometheus` and `promtool` (Debian package `prometheus`; ' +
      '.ci/run installs it). Dashboard and alert expressions were NOT checked against a real Prometheus. ***\n',
  );
}

describe.skipIf(!available)('dashboard and alerts against a real Prometheus', () => {
  let db: TestDatabase;
  let daemon: ReturnType<typeof startDaemon>;
  let prometheus: ChildProcess;
  let prometheusPort: number;

  beforeAll(async () => {
    db = await createTestDatabase();
    const metricsPort = await freePort();
    daemon = startDaemon(db.url, ['--metrics-port', String(metricsPort), '--metrics-host', '127.0.0.1', '--gap-timeout', '1s']);
    await waitFor('daemon healthy', async () => (await fetch(`http://127.0.0.1:${metricsPort}/healthz`)).ok, 30_000);

    const dir = mkdtempSync(path.join(os.tmpdir(), 'pr-prometheus-'));
    writeFileSync(
      path.join(dir, 'prometheus.yml'),
      `global: { scrape_interval: 1s, evaluation_interval: 1s }
rule_files: ['${REPO}/prometheus/alerts.yml']
scrape_configs:
  - job_name: projection-runner
    static_configs: [{ targets: ['127.0.0.1:${metricsPort}'] }]
`,
    );
    prometheusPort = await freePort();
    prometheus = spawn(
      'prometheus',
      [
        `--config.file=${path.join(dir, 'prometheus.yml')}`,
        `--storage.tsdb.path=${path.join(dir, 'data')}`,
        `--web.listen-address=127.0.0.1:${prometheusPort}`,
      ],
      { stdio: 'ignore' },
    );

    // Traffic that moves every metric: appends, a gap that fills, a gap that dies.
    const store = new EventStore(db.pool);
    for (let i = 0; i < 50; i++) await store.append(`e2e-${i % 5}`, [{ type: 'E', data: { i } }]);
    const slow = await db.connect();
    await slow.query('BEGIN');
    await store.append('slow', [{ type: 'E', data: {} }], { client: slow });
    const doomed = await db.connect();
    await doomed.query('BEGIN');
    await store.append('doomed', [{ type: 'E', data: {} }], { client: doomed });
    await store.append('after', [{ type: 'E', data: {} }]);
    await waitFor('both gaps seen', async () => (await db.pool.query('SELECT 1 FROM projection_gaps')).rows.length > 0);
    await doomed.query('ROLLBACK');
    await slow.query('COMMIT');
    for (let i = 0; i < 20; i++) await store.append(`e2e-late-${i}`, [{ type: 'E', data: {} }]);
  }, 60_000);

  afterAll(async () => {
    prometheus?.kill('SIGTERM');
    daemon?.child.kill('SIGTERM');
    await daemon?.exited;
    await db?.drop();
  });

  const query = async (expr: string) => {
    const url = `http://127.0.0.1:${prometheusPort}/api/v1/query?query=${encodeURIComponent(expr)}`;
    const body = (await (await fetch(url)).json()) as { status: string; data: { result: unknown[] }; error?: string };
    if (body.status !== 'success') throw new Error(`${expr}: ${body.error}`);
    return body.data.result;
  };

  it('promtool accepts the shipped config and rules', () => {
    expect(execFileSync('promtool', ['check', 'config', path.join(REPO, 'prometheus/prometheus.yml')]).toString()).toContain('SUCCESS');
    expect(execFileSync('promtool', ['check', 'rules', path.join(REPO, 'prometheus/alerts.yml')]).toString()).toContain(
      'SUCCESS: 10 rules found',
    );
  });

  it('every dashboard expression returns data', async () => {
    await waitFor('scraped', async () => (await query('up{job="projection-runner"} == 1')).length === 1, 30_000);
    const expressions = dashboardExpressions().map((e) => e.replaceAll('$projection', '.*'));
    const empty = await waitFor(
      'every expression has data',
      async () => {
        const missing: string[] = [];
        for (const expr of expressions) if ((await query(expr)).length === 0) missing.push(expr);
        return missing.length === 0 ? ['none'] : (console.info(`waiting for data: ${missing.join(' | ')}`), undefined);
      },
      45_000,
    );
    expect(empty).toEqual(['none']);
  }, 60_000);
});
