import { createInterface } from 'node:readline/promises';
import { InvalidArgumentError, Option, type Command } from 'commander';
import type { Logger } from 'pino';
import { resolveConfig, SETTINGS, STORE_SETTINGS, type RunnerConfig, type SettingKey } from '../config.js';
import { UnknownProjectionError } from '../errors.js';
import { createLogger } from '../logger.js';
import { loadProjections } from '../projection/loader.js';
import type { Projection } from '../projection/projection.js';
import type { RequestKind } from './request-plan.js';

/**
 * The headings of --help, in order, and the settings under each: a command shows the groups it uses (the daemon's
 * tuning only under `run`). A setting in no group is shown under the last heading.
 */
const HELP_GROUPS: Array<[heading: string, keys: readonly SettingKey[]]> = [
  ['Database and event source:', ['databaseUrl', ...STORE_SETTINGS]],
  ['Projections:', ['projections', 'handlerRetries', 'onError', 'switchMode']],
  ['Operator requests:', ['requestTimeoutMs']],
  ['Logging:', ['logLevel', 'logFormat']],
  ['Metrics server:', ['metricsHost', 'metricsPort', 'watchdogMs']],
];
const TUNING_HEADING = 'Daemon tuning:';

/** The daemon's tuning: what only `run` uses (and the demo sets itself). */
export const TUNING_SETTINGS = SETTINGS.map((s) => s.key).filter((k) => !HELP_GROUPS.some(([, keys]) => keys.includes(k)));

/** Adds the given settings as flags under their headings, each documenting its environment variable and default (from config.ts). */
export function addSettings(command: Command, keys: readonly SettingKey[]): Command {
  for (const [heading, group] of [...HELP_GROUPS, [TUNING_HEADING, TUNING_SETTINGS] as const]) {
    for (const s of SETTINGS) {
      if (!keys.includes(s.key) || !group.includes(s.key)) continue;
      const help = `${s.description} [env ${s.env}${s.default !== undefined ? `, default ${s.default}` : ''}]`;
      command.addOption(new Option('switch' in s ? `--${s.flag}` : `--${s.flag} <value>`, help).helpGroup(heading));
    }
  }
  return command;
}

/** Commander's option values (camel-cased flags) to a validated config. */
export function configFrom(options: Record<string, unknown>): RunnerConfig {
  const flags: Partial<Record<SettingKey, string>> = {};
  for (const s of SETTINGS) {
    // Commander keeps `--no-x` as x = false, and x = true when it was not given (then the variable decides).
    const negated = 'switch' in s && s.flag.startsWith('no-');
    const camel = (negated ? s.flag.slice(3) : s.flag).replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());
    const value = options[camel];
    if (typeof value === 'string') flags[s.key] = value;
    else if ('switch' in s && value === !negated) flags[s.key] = 'true';
  }
  return resolveConfig(flags);
}

/** Every command: where the database and the events are, and the logs. */
export const CONNECTION_SETTINGS = ['databaseUrl', ...STORE_SETTINGS, 'logLevel', 'logFormat'] as const satisfies readonly SettingKey[];

/**
 * The operator requests (replay, retry, skip, switch; rebuild adds --switch): the projections' code, and what a runner
 * in this process needs when no daemon runs the projection.
 */
export const REQUEST_SETTINGS = [
  ...CONNECTION_SETTINGS,
  'projections',
  'handlerRetries',
  'onError',
  'requestTimeoutMs',
] as const satisfies readonly SettingKey[];

/** `--yes`, worded the same on every command that asks for confirmation. */
export function yesOption(withoutTerminal: 'required' | 'not asked'): Option {
  return new Option(
    '--yes',
    `do not ask for confirmation (${withoutTerminal === 'required' ? 'required without a terminal' : 'without a terminal nothing is asked'})`,
  );
}

/**
 * An operator request command (`NAME` and its settings, src/cli/request.ts): `replay`, `retry`, `skip`, `rebuild`,
 * `switch`, with its own options (`own`); the command adds its action.
 */
export function operatorCommand(program: Command, kind: RequestKind, description: string, own: Option[]): Command {
  const command = program.command(kind).description(description).argument('<name>', 'projection name');
  // The command's own options first, under the usual heading; then the settings under theirs.
  for (const option of own) command.addOption(option);
  return addSettings(command, kind === 'rebuild' ? [...REQUEST_SETTINGS, 'switchMode'] : REQUEST_SETTINGS);
}

/** A command's logger: warnings and errors only at the default level, since the command's own lines are its output. */
export function commandLogger(config: RunnerConfig, quiet = false): Logger {
  return createLogger(quiet ? 'silent' : config.logLevel === 'info' ? 'warn' : config.logLevel, { format: config.logFormat });
}

/** `--version N`: which version of a projection's read model a command acts on (see src/versions/). */
export function versionOption(description = 'act on this version of the read model (default: the live one)'): Option {
  return new Option('--version <n>', description).argParser((text) => {
    const n = Number(text);
    if (!Number.isSafeInteger(n) || n < 1) throw new InvalidArgumentError(`a positive integer is expected (got ${JSON.stringify(text)})`);
    return n;
  });
}

/** Asks a yes/no question on the terminal (stderr, so stdout stays the command's output); no answer is no. */
export async function confirm(question: string): Promise<boolean> {
  const rl = createInterface({ input: process.stdin, output: process.stderr });
  try {
    return /^y(es)?$/i.test((await rl.question(`${question} [y/N] `)).trim());
  } finally {
    rl.close();
  }
}

/**
 * The projection a command acts on, loaded from --projections, with the command's logger (warnings and errors only
 * at the default level: the command's own lines are its output). An unknown name is an UnknownProjectionError listing
 * the known ones.
 */
export async function projectionNamed(name: string, config: RunnerConfig): Promise<{ projection: Projection; log: Logger }> {
  const log = commandLogger(config);
  const projections = await loadProjections(config.projections);
  const projection = projections.find((p) => p.name === name);
  if (!projection)
    throw new UnknownProjectionError(
      name,
      projections.map((p) => p.name),
    );
  return { projection, log };
}
