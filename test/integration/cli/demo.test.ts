import { chmodSync, existsSync, mkdtempSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { cli, inTerminal } from '../../support/child-runner.js';
import { createTestDatabase, waitFor } from '../../support/database.js';
import { screenOf } from '../../support/terminal.js';

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

describe('projection-runner demo', () => {
  it('applies events, resolves gaps, and stops everything on SIGINT', async () => {
    const cwd = mkdtempSync(path.join(os.tmpdir(), 'pr-demo-'));
    chmodSync(cwd, 0o755); // like a project folder; a private one is covered by the embedded module's fallback
    const demo = cli(['demo', '--metrics-port', '0'], { DATABASE_URL: undefined, PROJECTION_RUNNER_LOG_LEVEL: 'error' }, { cwd });
    let stdout = '';
    demo.stdout!.on('data', (d) => (stdout += d));
    demo.stderr!.on('data', (d) => (stdout += d));
    const exited = new Promise<number | null>((resolve) => demo.on('exit', (code) => resolve(code)));

    const status = () => {
      const lines = stdout.split(/[\r\n]+/).filter((l) => l.startsWith('applied '));
      const last = lines.at(-1);
      if (!last) return undefined;
      const n = (label: string) => Number(new RegExp(`${label} (\\d+)`).exec(last)?.[1] ?? 0);
      return { applied: n('applied'), resolved: n('filled') + n('dead') + n('timed_out') };
    };
    await waitFor(
      () => `events applied and a gap resolved; output so far:\n${stdout.slice(-2000)}`,
      () => {
        const s = status();
        return s && s.applied > 0 && s.resolved > 0;
      },
      60_000,
    );
    expect(stdout).toContain('projection-runner demo: account_balances, stream_stats on the embedded PostgreSQL');

    const pidFile = path.join(cwd, '.data/postgres/postmaster.pid');
    const postgresPid = Number(readFileSync(pidFile, 'utf8').split('\n')[0]);
    expect(alive(postgresPid)).toBe(true);
    demo.kill('SIGINT');
    expect(await exited).toBe(0);
    expect(stdout).toContain('demo stopped');
    expect(alive(postgresPid)).toBe(false);
    expect(existsSync(pidFile)).toBe(false);
  }, 90_000);
});

describe('projection-runner demo at a terminal (a pseudo-terminal)', () => {
  it('keeps its status line as the last line of the screen and prints readable log lines above it', async () => {
    const db = await createTestDatabase();
    try {
      const output = await inTerminal(['demo', '--metrics-port', '0', '--duration', '8'], {
        DATABASE_URL: db.url,
        PROJECTION_RUNNER_LOG_LEVEL: 'info',
      });
      const screen = screenOf(output.replace(/\r\n/g, '\n')).filter(Boolean);
      const logLine = /^\d\d:\d\d:\d\d\.\d{3} (INFO|WARN|ERROR) /;
      const stopping = screen.indexOf('stopping: writers, daemon, database…');
      expect(stopping, screen.join('\n')).toBeGreaterThan(0);
      // One status line, the last before the stop, however many times it was drawn; every other line whole.
      expect(screen.filter((l) => l.startsWith('applied '))).toHaveLength(1);
      expect(screen[stopping - 1]).toMatch(/^applied \d+ {2}head \d+/);
      expect(screen.filter((l) => logLine.test(l)).length).toBeGreaterThan(0);
      for (const line of screen) {
        expect(line).not.toContain('{"level"');
        expect(line, screen.join('\n')).toMatch(
          /^(applied |projection-runner demo: |stopping: |demo stopped$|\d\d:\d\d:\d\d\.\d{3} [A-Z]+ )/,
        );
      }
      // Log lines were printed while the status line was on the screen: above it.
      const firstStatus = output.indexOf('applied ');
      // eslint-disable-next-line no-control-regex -- the terminal's clear-line sequence
      expect(output.slice(firstStatus).search(/\u001b\[2K\d\d:\d\d:\d\d\.\d{3} /)).toBeGreaterThan(0);
    } finally {
      await db.drop();
    }
  }, 120_000);
});
