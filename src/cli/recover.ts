import type { Command } from 'commander';
import type pg from 'pg';
import type { RunnerConfig } from '../config.js';
import { storeNames, type StoreNames } from '../db/identifiers.js';
import { CommandFailedError, ProjectionNotFailedError, UsageError } from '../errors.js';
import { createLogger } from '../logger.js';
import { abandonCommand, readCommand, requestCommand, type CommandKind } from '../projector/commands.js';
import { listDeadLetters, type DeadLetter } from '../projector/dead-letters.js';
import { instanceName } from '../ownership/leases.js';
import { Runner } from '../runner/runner.js';
import { waitUntil } from '../shared/time.js';
import { withDatabasePool } from './database.js';
import {
  addSettings,
  configFrom,
  confirm,
  CONNECTION_SETTINGS,
  runnerUnlessOwned,
  projectionNamed,
  COMMAND_SETTINGS,
  versionOption,
} from './options.js';
import { readStatus } from './status.js';
import { prepareStore } from '../sources/prepare.js';
import { slotFor } from '../versions/builds-sql.js';

/**
 * `retry`, `skip` and `dead-letters`: the way out for a projection stopped by an event its handler keeps failing on.
 * retry and skip travel through the database (a row in projection_commands plus a NOTIFY) to the daemon that owns
 * the projection, which carries them out between two batches; with no daemon owning it, they run in this process,
 * as replay does.
 */

const RECOVERY_COMMANDS: Array<{ command: CommandKind; description: string; flag: [string, string] }> = [
  {
    command: 'retry',
    description: 'resume a failed projection without a restart (also while a daemon runs it)',
    flag: ['--dead-letters', 're-deliver its dead letters first (each exactly once), once the handler is fixed'],
  },
  {
    command: 'skip',
    description: 'dead-letter the event a failed projection is stopped at, and resume it',
    flag: ['--yes', 'do not ask for confirmation (required without a terminal)'],
  },
];

/** `retry NAME [--dead-letters]` and `skip NAME [--yes]`. */
export function registerRecovery(program: Command): void {
  for (const { command, description, flag } of RECOVERY_COMMANDS) {
    addSettings(
      program
        .command(command)
        .description(description)
        .argument('<name>', 'projection name')
        .option(...flag)
        .addOption(versionOption()),
      COMMAND_SETTINGS,
    ).action(async (name: string, options) => {
      await runCommand(name, command, configFrom(options), {
        deadLetters: options.deadLetters === true,
        yes: options.yes === true,
        version: options.version as number | undefined,
      });
    });
  }
}

async function runCommand(
  name: string,
  command: CommandKind,
  config: RunnerConfig,
  options: { deadLetters?: boolean; yes?: boolean; version?: number },
): Promise<void> {
  const { projection, log } = await projectionNamed(name, config);
  if (command === 'skip' && !options.yes && !process.stdin.isTTY) {
    throw new UsageError('no terminal to confirm on: pass --yes to skip without asking');
  }
  const names = storeNames(config);
  await withDatabasePool(
    config.databaseUrl,
    command,
    log,
    async (pool, connectionString) => {
      let runner: Runner | undefined;
      let id: bigint | undefined;
      try {
        await prepareStore(pool, names);
        // The live version's checkpoint, or --version's.
        const slot = await slotFor(pool, names, name, options.version);
        const status = (await readStatus(pool, names)).projections.find((p) => p.name === slot);
        let position: bigint | undefined;
        if (command === 'skip') {
          if (status?.state !== 'failed') throw new ProjectionNotFailedError(name, status?.state ?? 'never run');
          const failedAt = (status.lastError as { position?: string; type?: string; message?: string } | null) ?? {};
          position = failedAt.position ? BigInt(failedAt.position) : undefined;
          if (!options.yes) {
            const question = `Skip position ${failedAt.position ?? '?'} (${failedAt.type ?? '?'}) of "${name}"? It goes to projection_dead_letters (error: ${failedAt.message ?? '?'}).`;
            if (!(await confirm(question))) {
              process.stderr.write('skip cancelled\n');
              return;
            }
          }
        }
        id = await requestCommand(pool, names, {
          projection: slot,
          command,
          deadLetters: options.deadLetters,
          position,
          requestedBy: instanceName(),
        });
        runner = await runnerUnlessOwned(
          status?.owner,
          { config, connectionString, projection, log },
          {
            owned: (owner) => `${name} is run by ${owner}: the daemon carries out the ${command}`,
            here: `no daemon runs ${name}: ${command} in this process`,
          },
        );
        const row = await followCommand(pool, names, id);
        if (row.status === 'failed') throw new CommandFailedError(`${command} ${name}: ${row.error}`);
        let result = row.result ?? {};
        if (runner) {
          // In this process the projection runs only as long as the command: take it to the head (or to its next failure).
          const projector = await waitForSettled(runner, slot);
          if (projector.state === 'failed' && projector.failure) {
            const { fault } = projector.failure;
            throw new CommandFailedError(
              `${name} failed again at position ${fault.event.globalPosition} (${fault.event.type}): ${fault.reason}`,
            );
          }
          result = { ...result, state: projector.state, position: projector.checkpoint.toString() };
        }
        process.stdout.write(`${describeResult(name, command, result)}\n`);
      } finally {
        // A command left pending (interrupted, or refused above) must not be carried out later by surprise.
        if (id !== undefined) await abandonCommand(pool, names, id).catch(() => {});
        await runner?.stop();
      }
    },
    2,
  );
}

async function followCommand(pool: pg.Pool, names: StoreNames, id: bigint) {
  const row = await waitUntil(
    async () => {
      const row = await readCommand(pool, names, id);
      return row.status === 'done' || row.status === 'failed' ? row : undefined;
    },
    { intervalMs: 100 },
  );
  return row!;
}

async function waitForSettled(runner: Runner, name: string) {
  const settled = await waitUntil(
    () => runner.ownedProjections().find((p) => p.name === name && (p.state === 'running' || p.state === 'failed')),
    { intervalMs: 100 },
  );
  return settled!;
}

/** The one line a command prints on success. Pure, for the tests. */
export function describeResult(name: string, command: CommandKind, result: Record<string, unknown>): string {
  const parts: string[] = [];
  if (typeof result.redelivered === 'number')
    parts.push(`re-delivered ${result.redelivered} dead letter${result.redelivered === 1 ? '' : 's'}`);
  if (result.skipped !== undefined) parts.push(`dead-lettered position ${String(result.skipped as string | number)}`);
  if (result.resumed) parts.push('resumed');
  else if (command === 'retry') parts.push(`was not failed (${String(result.state)}): nothing to resume`);
  return `${command} ${name}: ${parts.join(', ')}; checkpoint at ${String(result.position)} (${String(result.state)})`;
}

export function registerDeadLetters(program: Command): void {
  addSettings(
    program
      .command('dead-letters')
      .description("list a projection's dead letters: events set aside because its handler kept failing on them")
      .argument('<name>', 'projection name')
      .option('--json', 'print JSON')
      .addOption(versionOption()),
    CONNECTION_SETTINGS,
  ).action(async (name: string, options) => {
    const config = configFrom(options);
    const log = createLogger(options.json ? 'silent' : config.logLevel === 'info' ? 'warn' : config.logLevel);
    await withDatabasePool(config.databaseUrl, 'dead-letters', log, async (pool) => {
      const names = storeNames(config);
      await prepareStore(pool, names);
      const letters = await listDeadLetters(pool, names, await slotFor(pool, names, name, options.version as number | undefined));
      process.stdout.write(
        options.json ? `${JSON.stringify(letters.map(deadLetterJson), null, 2)}\n` : `${formatDeadLetters(name, letters)}\n`,
      );
    });
  });
}

function letterStatus(d: DeadLetter): 'pending' | 'redelivered' | 'superseded' {
  return d.redeliveredAt ? 'redelivered' : d.superseded ? 'superseded' : 'pending';
}

/** Positions as JSON numbers, as `status --json` does. */
export function deadLetterJson(d: DeadLetter) {
  return {
    id: Number(d.id),
    position: Number(d.position),
    type: d.type,
    stream: d.streamName,
    streamPosition: Number(d.streamPosition),
    late: d.late,
    error: d.error,
    attempts: d.attempts,
    reason: d.reason,
    status: letterStatus(d),
    deadLetteredAt: d.deadLetteredAt.toISOString(),
    redeliveredAt: d.redeliveredAt?.toISOString() ?? null,
    lastRedeliveryError: d.lastRedeliveryError,
  };
}

export function formatDeadLetters(name: string, letters: DeadLetter[]): string {
  if (letters.length === 0) return `${name}: no dead letters`;
  const header = ['ID', 'POSITION', 'TYPE', 'STREAM', 'ATTEMPTS', 'REASON', 'DEAD-LETTERED', 'STATUS', 'ERROR'];
  const lines = letters.map((d) => [
    String(d.id),
    String(d.position),
    d.type,
    `${d.streamName}@${d.streamPosition}`,
    String(d.attempts),
    d.reason,
    d.deadLetteredAt.toISOString(),
    letterStatus(d),
    d.lastRedeliveryError ? `${d.error} (re-delivery failed: ${d.lastRedeliveryError})` : d.error,
  ]);
  const table = [header, ...lines];
  const widths = header.map((_, i) => Math.max(...table.map((l) => l[i]!.length)));
  const pending = letters.filter((d) => letterStatus(d) === 'pending').length;
  return [
    ...table.map((l) =>
      l
        .map((cell, i) => cell.padEnd(widths[i]!))
        .join('  ')
        .trimEnd(),
    ),
    '',
    pending > 0 ? `${pending} pending: once the handler is fixed, projection-runner retry ${name} --dead-letters` : 'none pending',
  ].join('\n');
}
