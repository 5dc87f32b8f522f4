import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type pg from 'pg';
import { readStatus } from '../../../src/cli/status.js';
import { storeNames } from '../../../src/db/identifiers.js';
import { createCheckpointRow } from '../../../src/projector/checkpoints.js';
import { REPO, runCli, type CliResult } from '../../support/child-runner.js';
import { createTestDatabase, type TestDatabase } from '../../support/database.js';

/**
 * Issue 25, the whole `status` command on a year-old store: most of a short command is Node starting and loading
 * modules. A command loads its own modules only (src/cli/main.ts), none of the daemon's (metrics, LISTEN, retries),
 * and `pg` loads without starting Node's fetch implementation (src/db/load-pg.ts). What a child loaded is recorded by
 * a preloaded module (test/support/loaded-modules.mjs); the time itself is figure (13) of `npm run bench`.
 */
let db: TestDatabase;
let dir: string;
beforeAll(async () => {
  db = await createTestDatabase();
  dir = mkdtempSync(path.join(os.tmpdir(), 'start-cost-'));
});
afterAll(async () => {
  rmSync(dir, { recursive: true, force: true });
  await db.drop();
});

const PRELOAD = pathToFileURL(path.join(REPO, 'test/support/loaded-modules.mjs')).href;
/** CommonJS packages only the daemon uses: metrics and the LISTEN connection. */
const DAEMON_PACKAGES = ['prom-client', 'pg-listen'];

async function loadedBy(args: string[], env: Record<string, string> = {}): Promise<CliResult & { packages: string[]; undici: boolean }> {
  const file = path.join(dir, `${args.join('').replace(/\W/g, '')}.json`);
  const result = await runCli(args, { ...env, NODE_OPTIONS: `--import ${PRELOAD}`, LOADED_MODULES_FILE: file });
  return { ...result, ...(JSON.parse(readFileSync(file, 'utf8')) as { packages: string[]; undici: boolean }) };
}

describe('a command loads what it uses', () => {
  it("status: its statement's modules, none of the daemon's, and not Node's fetch", async () => {
    const status = await loadedBy(['status'], { DATABASE_URL: db.url });
    expect(status.stderr).toBe('');
    expect(status.code).toBe(0);
    expect(status.stdout).toContain('open gaps: none');
    expect(status.packages).toEqual(expect.arrayContaining(['commander', 'pg', 'pg-pool']));
    for (const name of DAEMON_PACKAGES) expect(status.packages).not.toContain(name);
    // Nothing to log with a DATABASE_URL: no logger made.
    expect(status.packages).not.toContain('pino');
    expect(status.undici).toBe(false);
  });

  it('wait: no logger either, and not the daemon', async () => {
    const wait = await loadedBy(['wait', '0', '--timeout', '30s'], { DATABASE_URL: db.url });
    expect(wait.stderr).toBe('');
    expect(wait.code).toBe(0);
    expect(wait.packages).toContain('pg');
    for (const name of [...DAEMON_PACKAGES, 'pino']) expect(wait.packages).not.toContain(name);
    expect(wait.undici).toBe(false);
  });

  it('--version: no database client at all', async () => {
    const version = await loadedBy(['--version']);
    expect(version.code).toBe(0);
    expect(version.packages).not.toContain('pg');
  });

  it('run (refused at once: no projections) loads the daemon, still without fetch', async () => {
    const run = await loadedBy(['run', '--projections', path.join(dir, 'nothing-here')], { DATABASE_URL: db.url });
    expect(run.code).not.toBe(0);
    expect(run.packages).toEqual(expect.arrayContaining(DAEMON_PACKAGES));
    expect(run.undici).toBe(false);
  });

  it.each([[['--help']], [['-h', 'status']]])('%j still lists every command (every module loaded)', async (args) => {
    const help = await loadedBy(args);
    expect(help.code).toBe(0);
    for (const command of [
      'migrate',
      'run',
      'status',
      'replay',
      'rebuild',
      'switch',
      'drop',
      'retry',
      'skip',
      'dead-letters',
      'wait',
      'demo',
    ])
      expect(help.stdout).toMatch(new RegExp(`^ {2}${command} `, 'm'));
    expect(help.packages).toEqual(expect.arrayContaining(DAEMON_PACKAGES));
  });
});

describe("status's statement", () => {
  it('reads pg_locks once, not once per projection', async () => {
    const names = storeNames();
    for (let i = 1; i <= 6; i++) await createCheckpointRow(db.pool, names, `p${i}`, undefined, { running: false });
    let statement: { text: string; values: unknown[] } | undefined;
    const recording = { query: (text: string, values: unknown[]) => ((statement = { text, values }), db.pool.query(text, values)) };
    const report = await readStatus(recording as unknown as pg.Pool, names);
    expect(report.projections.map((p) => p.name)).toEqual(['p1', 'p2', 'p3', 'p4', 'p5', 'p6']);
    const { rows } = await db.pool.query(`EXPLAIN (ANALYZE, FORMAT JSON) ${statement!.text}`, statement!.values);
    const scans: Array<{ loops: number }> = [];
    const walk = (node: Record<string, unknown>) => {
      if (node['Function Name'] === 'pg_lock_status') scans.push({ loops: node['Actual Loops'] as number });
      for (const child of (node.Plans as Record<string, unknown>[] | undefined) ?? []) walk(child);
    };
    walk((rows[0]['QUERY PLAN'] as Array<{ Plan: Record<string, unknown> }>)[0]!.Plan);
    expect(scans).toEqual([{ loops: 1 }]);
  });
});
