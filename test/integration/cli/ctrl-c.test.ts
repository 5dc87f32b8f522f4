import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import pg from 'pg';
import { afterEach, describe, expect, it } from 'vitest';
import { EMBEDDED_PASSWORD } from '../../../src/db/embedded.js';
import { EventStore } from '../../../src/index.js';
import { FIXTURE_PROJECTIONS, REPO } from '../../support/child-runner.js';
import { waitFor } from '../../support/database.js';

/**
 * Ctrl-C in a terminal is SIGINT to the whole foreground process group. The embedded PostgreSQL must not be in it
 * (it would shut down under the runner), and the CLI must stop in order: runner, then the database it started.
 */

const STACK_LINE = /^\s+at /m;
const TSX_LOADER = pathToFileURL(path.join(REPO, 'node_modules/tsx/dist/loader.mjs')).href;

/** /proc/<pid>/stat: the parent and the process group (fields 4 and 5, after the command in parentheses). */
function stat(pid: number): { ppid: number; pgrp: number } | undefined {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8')
      .replace(/^.*\) /s, '')
      .split(' ');
    return { ppid: Number(fields[1]), pgrp: Number(fields[2]) };
  } catch {
    return undefined;
  }
}

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return stat(pid) !== undefined; // a zombie has no stat line worth the name once reaped
  } catch {
    return false;
  }
};

/** The postmaster of a data directory and every process it started (checkpointer, walwriter, backends…). */
function postgresProcesses(dataDir: string): number[] {
  const postmaster = Number(readFileSync(path.join(dataDir, 'postmaster.pid'), 'utf8').split('\n')[0]);
  const children = readdirSync('/proc')
    .filter((d) => /^\d+$/.test(d))
    .map(Number)
    .filter((pid) => stat(pid)?.ppid === postmaster);
  return [postmaster, ...children];
}

interface Started {
  child: ChildProcess;
  output: () => string;
  stderr: () => string;
  exited: Promise<number | null>;
}

/** Detached: the child leads a process group of its own, like a shell's foreground job, for process.kill(-pid). */
function startInGroup(command: string, args: string[], cwd: string, env: Record<string, string | undefined>): Started {
  const environment: Record<string, string | undefined> = { ...process.env, ...env };
  delete environment.DATABASE_URL; // the embedded database
  const child = spawn(command, args, { cwd, env: environment, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  let all = '';
  let stderr = '';
  child.stdout!.on('data', (d) => (all += d));
  child.stderr!.on('data', (d) => {
    all += d;
    stderr += d;
  });
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  return { child, output: () => all, stderr: () => stderr, exited };
}

const scratch: string[] = [];
const running: Started[] = [];
afterEach(async () => {
  for (const started of running.splice(0)) {
    if (started.child.exitCode === null && started.child.signalCode === null) {
      process.kill(-started.child.pid!, 'SIGKILL');
      await started.exited;
    }
  }
  for (const dir of scratch.splice(0)) rmSync(dir, { recursive: true, force: true });
});

function tempDir(prefix: string): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), prefix));
  chmodSync(dir, 0o755); // the server runs as `postgres` when the tests run as root
  scratch.push(dir);
  return dir;
}

/**
 * A copy of the project whose sources are the repository's own (symlinks): `npm run demo` runs the real script of
 * the real package.json, and the embedded data (.data/ in the working directory) stays in a folder of this test.
 */
function projectCopy(): string {
  const dir = tempDir('pr-ctrl-c-demo-');
  copyFileSync(path.join(REPO, 'package.json'), path.join(dir, 'package.json'));
  copyFileSync(path.join(REPO, 'tsconfig.json'), path.join(dir, 'tsconfig.json'));
  for (const entry of ['src', 'projections', 'node_modules']) symlinkSync(path.join(REPO, entry), path.join(dir, entry));
  return dir;
}

/** SIGINT to the group; optionally to the server as well (how it was before it had a group of its own). */
async function ctrlC(started: Started, dataDir: string, { alsoTheServer = false } = {}) {
  const postgres = postgresProcesses(dataDir);
  // The postmaster and its auxiliary processes at least (a backend may be ending as we list them).
  expect(postgres.length).toBeGreaterThan(1);
  expect(alive(postgres[0]!)).toBe(true);
  // Not in the group the terminal signals.
  expect(stat(postgres[0]!)!.pgrp).not.toBe(started.child.pid);
  process.kill(-started.child.pid!, 'SIGINT');
  if (alsoTheServer) process.kill(postgres[0]!, 'SIGINT');
  const code = await started.exited;
  return { code, postgres };
}

describe('Ctrl-C (SIGINT to the process group)', () => {
  for (const alsoTheServer of [false, true]) {
    it(`npm run demo: writers, daemon, then the embedded database stop; exit 0, no stack trace${alsoTheServer ? ' (the server signalled too, as when it shared the group: its dropped connections crash nothing)' : ''}`, async () => {
      const cwd = projectCopy();
      const demo = startInGroup('npm', ['run', 'demo', '--', '--metrics-port', '0'], cwd, { PROJECTION_RUNNER_LOG_LEVEL: 'error' });
      running.push(demo);
      await waitFor(
        () => `events applied; output so far:\n${demo.output().slice(-2000)}`,
        () => /applied [1-9]/.test(demo.output()),
        90_000,
      );

      const { code, postgres } = await ctrlC(demo, path.join(cwd, '.data/postgres'), { alsoTheServer });
      expect(code, demo.output()).toBe(0);
      expect(demo.stderr()).not.toMatch(STACK_LINE);
      expect(demo.output()).toContain('demo stopped');
      expect(postgres.filter(alive)).toEqual([]);
      expect(existsSync(path.join(cwd, '.data/postgres/postmaster.pid'))).toBe(false);
    }, 120_000);
  }

  for (const alsoTheServer of [false, true]) {
    it(`run on the embedded database: the batch finishes, the runner stops, then the database${alsoTheServer ? ' (the server signalled too, as when it shared the group: no crash)' : ''}`, async () => {
      const cwd = tempDir('pr-ctrl-c-run-');
      const run = startInGroup(
        process.execPath,
        [
          '--import',
          TSX_LOADER,
          path.join(REPO, 'src/cli/main.ts'),
          'run',
          '--projections',
          FIXTURE_PROJECTIONS,
          '--metrics-port',
          '0',
          '--poll-interval',
          '200ms',
        ],
        cwd,
        { PROJECTION_RUNNER_LOG_LEVEL: 'info' },
      );
      running.push(run);
      await waitFor(
        () => `runner started; output so far:\n${run.output().slice(-2000)}`,
        () => run.output().includes('"runner started"'),
        90_000,
      );

      // Events into the embedded database, applied by both projections.
      const dataDir = path.join(cwd, '.data/postgres');
      const port = Number(readFileSync(path.join(dataDir, 'postmaster.pid'), 'utf8').split('\n')[3]);
      const pool = new pg.Pool({ connectionString: `postgres://postgres:${EMBEDDED_PASSWORD}@127.0.0.1:${port}/postgres`, max: 2 });
      pool.on('error', () => {});
      try {
        const store = new EventStore(pool);
        for (let i = 0; i < 30; i++) await store.append(`c-${i % 3}`, [{ type: 'E', data: { i } }]);
        await waitFor('both projections caught up', async () => {
          const { rows } = await pool.query('SELECT count(*)::int AS n FROM projection_checkpoints WHERE position = 30');
          return rows[0].n === 2;
        });
      } finally {
        await pool.end();
      }

      const { code, postgres } = await ctrlC(run, dataDir, { alsoTheServer });
      const output = run.output();
      expect(code, output).toBe(0);
      expect(run.stderr()).not.toMatch(STACK_LINE);
      expect(output).not.toMatch(STACK_LINE);
      const order = ['shutting down: finishing the current batches', '"runner stopped"', 'embedded PostgreSQL stopped'].map((m) =>
        output.indexOf(m),
      );
      expect(
        order.every((i) => i >= 0),
        output,
      ).toBe(true);
      expect(order).toEqual([...order].sort((a, b) => a - b));
      expect(postgres.filter(alive)).toEqual([]);
      expect(existsSync(path.join(dataDir, 'postmaster.pid'))).toBe(false);
    }, 120_000);
  }
});
