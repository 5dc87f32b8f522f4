import { Option, type Command } from 'commander';
import type pg from 'pg';
import { storeNames, type StoreNames } from '../db/identifiers.js';
import { CommandFailedError, ProjectionNotFailedError, VersionRequestError } from '../errors.js';
import { readCommand, requestCommand, type CommandKind } from '../projector/commands.js';
import { withdrawRequest } from '../replay/requests.js';
import { listDeadLetters, type DeadLetter } from '../projector/dead-letters.js';
import { instanceName } from '../ownership/leases.js';
import { waitUntil } from '../shared/time.js';
import { withDatabasePool } from './database.js';
import { addSettings, commandLogger, configFrom, CONNECTION_SETTINGS, operatorCommand, versionOption, yesOption } from './options.js';
import { ownerOf, serveRequest, type RequestTicket } from './request.js';
import { prepareStore } from '../sources/prepare.js';
import { describeVersions, slotFor } from '../versions/builds-sql.js';

/**
 * `retry`, `skip` and `dead-letters`: the way out for a projection stopped by an event its handler keeps failing on.
 * retry and skip travel through the database (a row in projection_commands plus a NOTIFY) to the daemon that owns
 * the projection, which carries them out between two batches; with no daemon owning it, they run in this process,
 * as replay does.
 */

const RECOVERY_COMMANDS: Array<{ command: CommandKind; description: string; option: () => Option }> = [
  {
    command: 'retry',
    description: 'resume a failed projection without a restart (also while a daemon runs it)',
    option: () => new Option('--dead-letters', 're-deliver its dead letters first (each exactly once), once the handler is fixed'),
  },
  {
    command: 'skip',
    description: 'dead-letter the event a failed projection is stopped at, and resume it',
    option: () => yesOption('required'),
  },
];

/** `retry NAME [--dead-letters]` and `skip NAME [--yes]`, through the one request path (src/cli/request.ts). */
export function registerRecovery(program: Command): void {
  for (const { command, description, option } of RECOVERY_COMMANDS) {
    operatorCommand(program, command, description, [option(), versionOption()]).action(async (name: string, options) => {
      const version = options.version as number | undefined;
      await serveRequest({
        kind: command,
        name,
        config: configFrom(options),
        yes: options.yes === true,
        confirmation: command === 'skip' ? 'always' : undefined,
        target: ({ builds, status }) => {
          // The live version's checkpoint, or --version's.
          const build = version === undefined ? builds.find((b) => b.role === 'live') : builds.find((b) => b.version === version);
          if (version !== undefined && !build) {
            throw new VersionRequestError(name, `there is no version ${version} (versions: ${describeVersions(builds)})`);
          }
          const slot = build?.slot ?? name;
          const state = status.projections.find((p) => p.name === slot);
          if (command === 'retry') return { build, owner: ownerOf(status, slot) };
          if (state?.state !== 'failed') throw new ProjectionNotFailedError(name, state?.state ?? 'never run');
          const failedAt = failure(state.lastError);
          return {
            build,
            owner: ownerOf(status, slot),
            question: `Skip position ${failedAt.position ?? '?'} (${failedAt.type ?? '?'}) of "${name}"? It goes to projection_dead_letters (error: ${failedAt.message ?? '?'}).`,
          };
        },
        say: {
          owned: (owner) => `${name} is run by ${owner}: the daemon carries out the ${command}`,
          here: `no daemon runs ${name}: ${command} in this process`,
        },
        request: async ({ pool, names, status }, { build }) => {
          const slot = build?.slot ?? name;
          const position = failure(status.projections.find((p) => p.name === slot)?.lastError).position;
          const id = await requestCommand(pool, names, {
            projection: slot,
            command,
            deadLetters: options.deadLetters === true,
            position: command === 'skip' && position ? BigInt(position) : undefined,
            requestedBy: instanceName(),
          });
          return commandTicket(pool, names, { id, slot, name, command });
        },
      });
    });
  }
}

const failure = (lastError: unknown) => (lastError as { position?: string; type?: string; message?: string } | null) ?? {};

/** Where a retry or skip stands: its row, then (in this process) the projection taken to the head or its next failure. */
function commandTicket(
  pool: pg.Pool,
  names: StoreNames,
  { id, slot, name, command }: { id: bigint; slot: string; name: string; command: CommandKind },
): RequestTicket {
  return {
    slot,
    carriesOn: `its owner carries the ${command} out (see \`projection-runner status\`)`,
    withdraw: () => withdrawRequest(pool, names, 'commands', id),
    read: async () => {
      const row = await readCommand(pool, names, id);
      if (row.status === 'pending') return { kind: 'waiting' };
      if (row.status === 'running') return { kind: 'working' };
      if (row.status === 'failed') throw new CommandFailedError(`${command} ${name}: ${row.error}`);
      return {
        kind: 'done',
        report: async (runner, signal) => {
          let result = row.result ?? {};
          if (runner) {
            // In this process the projection runs only as long as the command: take it to the head (or to its next failure).
            const projector = await waitUntil(
              () => runner.ownedProjections().find((p) => p.name === slot && (p.state === 'running' || p.state === 'failed')),
              { intervalMs: 100, signal },
            );
            if (!projector) throw new Error('interrupted');
            if (projector.state === 'failed' && projector.failure) {
              const { fault } = projector.failure;
              throw new CommandFailedError(
                `${name} failed again at position ${fault.event.globalPosition} (${fault.event.type}): ${fault.reason}`,
              );
            }
            result = { ...result, state: projector.state, position: projector.checkpoint.toString() };
          }
          return describeResult(name, command, result);
        },
      };
    },
  };
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
    const log = commandLogger(config, options.json === true);
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
