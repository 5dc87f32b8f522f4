#!/usr/bin/env node
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

/** Exit codes: 0 ok, 1 error, 2 usage. Errors are one line on stderr, never with the password. */
const program = new Command('projection-runner')
  .description('Keeps read models up to date from a PostgreSQL event store, never silently skipping an event.')
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
