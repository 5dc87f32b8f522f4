#!/usr/bin/env node
import { readFileSync } from 'node:fs';
import { Command, CommanderError } from 'commander';
import { loadPg } from '../db/load-pg.js';
import { ConfigError, ProjectionRunnerError, UsageError } from '../errors.js';

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

type Register = (program: Command) => void;

/**
 * Each command's module and the commands it adds, in the order of --help. A module is imported only when one of its
 * commands runs: the daemon's modules (metrics, listener, tracker) cost a short command like `status` more than its
 * statement does. No known command (--help, `help`, a typo): every module, so the help lists them all.
 */
const COMMANDS: Array<[names: string[], load: () => Promise<Register[]>]> = [
  [['migrate'], async () => [(await import('./migrate.js')).registerMigrate]],
  [['run'], async () => [(await import('./run.js')).registerRun]],
  [['status'], async () => [(await import('./status.js')).registerStatus]],
  [['replay'], async () => [(await import('./replay.js')).registerReplay]],
  [['rebuild', 'switch', 'drop'], async () => [(await import('./versions.js')).registerVersions]],
  [
    ['retry', 'skip', 'dead-letters'],
    async () => {
      const recover = await import('./recover.js');
      return [recover.registerRecovery, recover.registerDeadLetters];
    },
  ],
  [['wait'], async () => [(await import('./wait.js')).registerWait]],
  [['demo'], async () => [(await import('./demo.js')).registerDemo]],
];

/**
 * The command named on the command line: the first argument that is not an option (the program's come first). The
 * program's help before it (`-h status`) lists every command.
 */
const args = process.argv.slice(2);
const named = args.find((arg) => !arg.startsWith('-'));
const programHelp = args.slice(0, named === undefined ? args.length : args.indexOf(named)).some((a) => a === '-h' || a === '--help');
const wanted = COMMANDS.filter(([names]) => !programHelp && named !== undefined && names.includes(named));
const versionOnly = args.length === 1 && ['-V', '--version'].includes(args[0]!);
if (!versionOnly) {
  // Before any command's module: they import pg (see loadPg).
  await loadPg();
  for (const [, load] of wanted.length > 0 ? wanted : COMMANDS) for (const register of await load()) register(program);
}
for (const command of program.commands) command.exitOverride();

async function fail(error: unknown): Promise<never> {
  const { describeConnection, redactSecrets } = await import('../db/connection.js');
  const { isAuthenticationFailure } = await import('./database.js');
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
  await fail(error);
}
