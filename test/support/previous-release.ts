import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, beforeAll } from 'vitest';
import { REPO } from './child-runner.js';
import { createTestDatabase, type TestDatabase } from './database.js';

const TSX_LOADER = pathToFileURL(path.join(REPO, 'node_modules/tsx/dist/loader.mjs')).href;

/**
 * An earlier release of this code, taken from git (`commit`), to run its CLI as its users did: an upgrade under a
 * running daemon, or a daemon that predates a protocol. `available` is false in a shallow clone without the commit
 * (the test then skips, saying so).
 */
export function previousRelease(commit: string, what: string) {
  const available = (() => {
    try {
      execFileSync('git', ['-C', REPO, 'cat-file', '-e', `${commit}^{commit}`], { stdio: 'ignore' });
      return true;
    } catch {
      console.warn(`SKIPPED: ${what} needs commit ${commit} (an earlier release) in the clone's history`);
      return false;
    }
  })();
  let dir: string | undefined;
  return {
    available,
    /** Its sources in a folder of their own (beforeAll). */
    unpack(): void {
      dir = mkdtempSync(path.join(tmpdir(), 'previous-release-'));
      execFileSync('sh', ['-c', `git -C "${REPO}" archive ${commit} src package.json | tar -x -C "${dir}"`]);
      symlinkSync(path.join(REPO, 'node_modules'), path.join(dir, 'node_modules'));
    },
    /** Its CLI against `databaseUrl`; output collected for the test's diagnostics. */
    cli(args: string[], databaseUrl: string) {
      const child = spawn(process.execPath, ['--import', TSX_LOADER, path.join(dir!, 'src/cli/main.ts'), ...args], {
        cwd: dir,
        env: { ...process.env, PROJECTION_RUNNER_LOG_LEVEL: 'warn', DATABASE_URL: databaseUrl },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      const output: string[] = [];
      child.stdout.on('data', (d) => output.push(String(d)));
      child.stderr.on('data', (d) => output.push(String(d)));
      const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
      return { child, output, exited };
    },
    remove(): void {
      if (dir) rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * The fixture of a test against an earlier release: its sources unpacked and a database nobody has migrated, before
 * the file's tests; both removed after them. `release.available` says whether the tests can run at all.
 */
export function usePreviousRelease(commit: string, what: string) {
  const fixture = { release: previousRelease(commit, what), db: undefined as unknown as TestDatabase };
  beforeAll(async () => {
    if (!fixture.release.available) return;
    fixture.release.unpack();
    fixture.db = await createTestDatabase({ migrated: false });
  });
  afterAll(async () => {
    await fixture.db?.drop();
    fixture.release.remove();
  });
  return fixture;
}
