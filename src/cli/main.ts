#!/usr/bin/env node
import { readFileSync } from 'node:fs';
import { Command, CommanderError } from 'commander';
import { redactSecrets } from '../db/connection.js';
import { ConfigError, ProjectionRunnerError, UsageError } from '../errors.js';
import { registerDemo } from './demo.js';
import { registerMigrate } from './migrate.js';
import { registerDeadLetters, registerRecovery } from './recover.js';
import { registerReplay } from './replay.js';
import { registerRun } from './run.js';
import { registerStatus } from './status.js';
import { registerVersions } from './versions.js';
import { registerWait } from './wait.js';
import { isAuthenticationFailure } from './database.js';
import { describeConnection } from '../db/connection.js';

/** The package's version: package.json two folders up from src/cli/ (tsx), three from dist/src/cli/ (compiled). */
function packageVersion(): string {
  for (const up of ['../../package.json', '../../../package.json']) {
    try {
      const manifest = JSON.parse(readFileSync(new URL(up, import.meta.url), 'utf8')) as { name?: string; version?: string };
      if (manifest.name === 'projection-runner' && manifest.version) return manifest.version;
    } catch {
      // not there: the other layout
    }
  }
  return 'unknown';
}

/**
 * Exit codes: 0 ok, 1 error, 2 usage. Errors are one line on stderr, never with the password. The program's own
 * options (`--version`, `-V`) come before the command: after it, `--version N` is a command's (retry, switch, drop…).
 */
const program = new Command('projection-runner')
  .description('Keeps read models up to date from a PostgreSQL event store, never silently skipping an event.')
  .version(packageVersion(), '-V, --version', 'print the version and exit')
  .enablePositionalOptions()
  .exitOverride()
  .showHelpAfterError();
registerMigrate(program);
registerRun(program);
registerStatus(program);
registerReplay(program);
registerVersions(program);
registerRecovery(program);
registerDeadLetters(program);
registerWait(program);
registerDemo(program);
for (const command of program.commands) command.exitOverride();

function fail(error: unknown): never {
  const url = process.env.DATABASE_URL ?? process.argv.find((_, i) => process.argv[i - 1] === '--database-url');
  let message = error instanceof Error ? error.message : String(error);
  if (isAuthenticationFailure(error)) message = `authentication failed for PostgreSQL at ${url ? describeConnection(url) : 'the database'}`;
  else if (!(error instanceof ProjectionRunnerError) && !(error instanceof ConfigError))
    message = `${(error as Error).name ?? 'Error'}: ${message}`;
  process.stderr.write(`projection-runner: ${redactSecrets(message, url)}\n`);
  process.exit(error instanceof UsageError ? 2 : 1);
}

try {
  await program.parseAsync(process.argv);
} catch (error) {
  if (error instanceof CommanderError) {
    if (error.code === 'commander.helpDisplayed' || error.code === 'commander.version') process.exit(0);
    process.exit(error.exitCode === 0 ? 0 : 2);
  }
  fail(error);
}
