import { readFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SETTINGS } from '../../../src/config.js';
import { TUNING_SETTINGS } from '../../../src/cli/options.js';
import { FIXTURE_PROJECTIONS, inTerminal, REPO, runCli } from '../../support/child-runner.js';
import { createTestDatabase, type TestDatabase } from '../../support/database.js';

/**
 * Issue 28, CLI habits and logs: `--version`, each command's help showing only what it uses, `--yes` on every command
 * that asks for confirmation, and logs as JSON for a pipe and as readable lines for a terminal.
 */
let db: TestDatabase;
beforeAll(async () => (db = await createTestDatabase()));
afterAll(() => db.drop());

const VERSION = (JSON.parse(readFileSync(path.join(REPO, 'package.json'), 'utf8')) as { version: string }).version;
const COMMANDS = ['migrate', 'status', 'wait', 'replay', 'retry', 'skip', 'dead-letters', 'rebuild', 'switch', 'drop'];
const CONFIRMING = ['replay', 'skip', 'drop', 'rebuild', 'switch'];
const tuningFlags = SETTINGS.filter((s) => (TUNING_SETTINGS as readonly string[]).includes(s.key)).map((s) => `--${s.flag}`);

describe('--version', () => {
  it.each(['--version', '-V'])('%s prints the version, exit 0', async (flag) => {
    expect(await runCli([flag])).toEqual({ code: 0, stdout: `${VERSION}\n`, stderr: '' });
  });

  it("after a command, --version N stays that command's option", async () => {
    const { code, stderr } = await runCli(['retry', 'nope', '--version', '2', '--projections', FIXTURE_PROJECTIONS], {
      DATABASE_URL: db.url,
    });
    expect(stderr).toContain('unknown projection "nope"');
    expect(code).toBe(1);
  });
});

describe('help: each command shows the options it uses, under headings', () => {
  it('knows the daemon tuning it must keep out of the commands', () => {
    expect(tuningFlags).toEqual(
      expect.arrayContaining(['--gap-timeout', '--batch-size', '--batch-bytes', '--fence-delay', '--poll-interval']),
    );
  });

  it.each(COMMANDS)('%s --help: connection and source, none of the daemon tuning', async (command) => {
    const { code, stdout } = await runCli([command, '--help']);
    expect(code).toBe(0);
    expect(stdout).toContain('Database and event source:');
    expect(stdout).toMatch(/--database-url <value>/);
    expect(stdout).toMatch(/--source <value>/);
    expect(stdout).toMatch(/--log-format <value>/);
    // As an option (a line of its own); a description may still name one ("wakes on --poll-interval").
    for (const flag of tuningFlags) expect(stdout).not.toMatch(new RegExp(`^\\s+${flag}\\b`, 'm'));
    expect(stdout).not.toContain('Daemon tuning:');
  });

  it('run --help has the daemon tuning under its heading', async () => {
    const { stdout } = await runCli(['run', '--help']);
    expect(stdout).toMatch(/Daemon tuning:\n(.*\n)*\s+--gap-timeout <value>/);
    expect(stdout).toContain('Metrics server:');
  });

  it.each(['replay', 'retry', 'skip', 'rebuild', 'switch'])('%s states its bound: --request-timeout with its default', async (command) => {
    const { stdout } = await runCli([command, '--help']);
    expect(stdout.replace(/\s+/g, ' ')).toContain(
      'a request nobody takes up within this time is withdrawn (exit 1) [env PROJECTION_RUNNER_REQUEST_TIMEOUT, default 30s]',
    );
  });
});

describe('--yes on every command that asks for confirmation', () => {
  it.each(CONFIRMING)('%s takes --yes, documented the same way', async (command) => {
    const help = (await runCli([command, '--help'])).stdout.replace(/\s+/g, ' ');
    expect(help).toMatch(/--yes do not ask for confirmation \((required without a terminal|without a terminal nothing is asked)\)/);
    const args = [command, 'nope', '--yes', ...(command === 'drop' ? ['--version', '2'] : ['--projections', FIXTURE_PROJECTIONS])];
    const { code, stderr } = await runCli(args, { DATABASE_URL: db.url });
    expect(stderr).not.toContain('unknown option');
    expect(code).toBe(1); // accepted: refused for the unknown projection, not as usage
  });
});

describe('logs for people and for machines', () => {
  const env = () => ({ DATABASE_URL: db.url, PROJECTION_RUNNER_LOG_LEVEL: 'info' });
  // The level may be coloured (an escape sequence around it) at a terminal.
  // eslint-disable-next-line no-control-regex
  const PRETTY = /^\d\d:\d\d:\d\d\.\d{3} (\u001b\[\d+m)?INFO (\u001b\[0m)? schema is up to date {2}/m;

  it('JSON lines on stderr when it is not a terminal; stdout stays clean', async () => {
    const { code, stdout, stderr } = await runCli(['migrate'], env());
    expect(code).toBe(0);
    expect(stdout).toBe('');
    expect(JSON.parse(stderr.trim().split('\n')[0]!)).toMatchObject({ level: 30, msg: 'schema is up to date' });
  });

  it('readable lines at a terminal (a pseudo-terminal)', async () => {
    const output = (await inTerminal(['migrate'], env())).replace(/\r\n/g, '\n');
    expect(output).toMatch(PRETTY);
    expect(output).not.toContain('{"level"');
  });

  it('--log-format and PROJECTION_RUNNER_LOG_FORMAT choose either way', async () => {
    expect((await inTerminal(['migrate', '--log-format', 'json'], env())).replace(/\r\n/g, '\n')).toMatch(
      /^\{"level":30,.*"msg":"schema is up to date"\}$/m,
    );
    const piped = await runCli(['migrate'], { ...env(), PROJECTION_RUNNER_LOG_FORMAT: 'pretty' });
    expect(piped.stderr).toMatch(PRETTY);
    const bad = await runCli(['migrate', '--log-format', 'xml'], env());
    expect(bad).toMatchObject({
      code: 1,
      stderr: expect.stringContaining('invalid --log-format (PROJECTION_RUNNER_LOG_FORMAT): must be one of json, pretty'),
    });
  });
});
