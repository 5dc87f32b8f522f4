import { chmodSync, existsSync, mkdtempSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { cli } from '../../support/child-runner.js';
import { waitFor } from '../../support/database.js';

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
