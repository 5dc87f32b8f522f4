import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterEach, beforeEach } from 'vitest';
import { createTestDatabase, type TestDatabase } from './database.js';

export const REPO = path.resolve(import.meta.dirname, '../..');
export const FIXTURE_PROJECTIONS = path.join(REPO, 'test/fixtures/projections');

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** The CLI as users run it, through tsx so tests never run a stale build. */
const TSX_LOADER = pathToFileURL(path.join(REPO, 'node_modules/tsx/dist/loader.mjs')).href;

export function cli(args: string[], env: Record<string, string | undefined> = {}, options: { cwd?: string } = {}): ChildProcess {
  return spawn(process.execPath, ['--import', TSX_LOADER, path.join(REPO, 'src/cli/main.ts'), ...args], {
    cwd: options.cwd ?? REPO,
    env: { ...process.env, PROJECTION_RUNNER_LOG_LEVEL: 'warn', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
}

export function runCli(args: string[], env: Record<string, string | undefined> = {}, timeoutMs = 60_000): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = cli(args, env);
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (d) => (stdout += d));
    child.stderr!.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`cli ${args.join(' ')} timed out\n${stdout}\n${stderr}`));
    }, timeoutMs);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/**
 * The CLI with stdin, stdout and stderr on a pseudo-terminal (util-linux `script`), as a person runs it: what the
 * terminal was sent (\r\n line ends as a terminal gets them).
 */
export function inTerminal(args: string[], env: Record<string, string>): Promise<string> {
  const quote = (word: string) => `'${word.replace(/'/g, `'\\''`)}'`;
  const command = [process.execPath, '--import', TSX_LOADER, path.join(REPO, 'src/cli/main.ts'), ...args].map(quote).join(' ');
  return new Promise((resolve, reject) => {
    const child = spawn('script', ['-qec', command, '/dev/null'], {
      cwd: REPO,
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    child.stdout.on('data', (d) => (output += d));
    child.stderr.on('data', (d) => (output += d));
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve(output) : reject(new Error(`exit ${code}: ${output}`))));
  });
}

/** A daemon child process (`run`); output is collected for the test's diagnostics. */
export function startDaemon(databaseUrl: string, extraArgs: string[] = [], env: Record<string, string> = {}) {
  const child = cli(['run', '--projections', FIXTURE_PROJECTIONS, '--metrics-port', '0', '--poll-interval', '200ms', ...extraArgs], {
    DATABASE_URL: databaseUrl,
    ...env,
  });
  const output: string[] = [];
  child.stdout!.on('data', (d) => output.push(String(d)));
  child.stderr!.on('data', (d) => output.push(String(d)));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  return { child, output, exited };
}

/**
 * The fixture of a test with daemon processes: a fresh database before each test; after it, every daemon the test
 * registered in `daemons` SIGKILLed and reaped, and the database dropped.
 */
export function useDaemonFixture() {
  const fixture = { daemons: [] as Array<ReturnType<typeof startDaemon>> } as {
    db: TestDatabase;
    daemons: Array<ReturnType<typeof startDaemon>>;
  };
  beforeEach(async () => {
    fixture.db = await createTestDatabase();
  });
  afterEach(async () => {
    for (const d of fixture.daemons.splice(0)) {
      d.child.kill('SIGKILL');
      await d.exited;
    }
    await fixture.db.drop();
  });
  return fixture;
}
