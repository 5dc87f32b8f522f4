import { createInterface } from 'node:readline/promises';
import { InvalidArgumentError, Option, type Command } from 'commander';
import type { Logger } from 'pino';
import {
  resolveConfig,
  RUNNER_SETTINGS,
  SETTINGS,
  STORE_SETTINGS,
  type RunnerConfig,
  type RunnerSettings,
  type SettingKey,
} from '../config.js';
import { UnknownProjectionError } from '../errors.js';
import { createLogger } from '../logger.js';
import { loadProjections } from '../projection/loader.js';
import type { Projection } from '../projection/projection.js';
import { Runner, type RunnerOptions } from '../runner/runner.js';

/** Adds the given settings as flags, each documenting its environment variable and default (from config.ts). */
export function addSettings(command: Command, keys: readonly SettingKey[]): Command {
  for (const s of SETTINGS) {
    if (!keys.includes(s.key)) continue;
    const help = `${s.description} [env ${s.env}${s.default !== undefined ? `, default ${s.default}` : ''}]`;
    command.addOption(new Option('switch' in s ? `--${s.flag}` : `--${s.flag} <value>`, help));
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

export const CONNECTION_SETTINGS = ['databaseUrl', ...STORE_SETTINGS, 'logLevel'] as const satisfies readonly SettingKey[];

/** The Runner's options from a validated config: one place, for `run` and for the in-process `replay`. */
export function runnerOptionsFrom(config: RunnerConfig, connectionString: string, projections: Projection[], log: Logger): RunnerOptions {
  if (config.lateWatchMs !== undefined) {
    log.warn(
      '--late-watch (PROJECTION_RUNNER_LATE_WATCH) is deprecated and ignored: a given-up gap is now watched until PostgreSQL proves nothing can fill it',
    );
  }
  const settings = Object.fromEntries(RUNNER_SETTINGS.map((key) => [key, config[key]])) as RunnerSettings;
  return { connectionString, projections, log, ...settings };
}

/**
 * A runner in this process for one projection, for the commands that act themselves when no daemon owns it
 * (replay, retry, skip): polls often so the command's progress shows, no gap evidence (it is not the daemon).
 */
export function inProcessRunner(config: RunnerConfig, connectionString: string, projection: Projection, log: Logger): Runner {
  return new Runner({
    ...runnerOptionsFrom(config, connectionString, [projection], log),
    pollIntervalMs: Math.min(config.pollIntervalMs, 250),
    gapEvidence: 'off',
  });
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
 * Who carries out a request for one projection (replay, retry, skip): the daemon that owns it (`owner`), else a runner
 * started here for it, returned so that the command stops it when done. Says which on stderr.
 */
export async function runnerUnlessOwned(
  owner: string | null | undefined,
  target: { config: RunnerConfig; connectionString: string; projection: Projection; log: Logger },
  say: { owned: (owner: string) => string; here: string },
): Promise<Runner | undefined> {
  if (owner) {
    process.stderr.write(`${say.owned(owner)}\n`);
    return undefined;
  }
  process.stderr.write(`${say.here}\n`);
  const runner = inProcessRunner(target.config, target.connectionString, target.projection, target.log);
  await runner.start();
  return runner;
}

/** The settings of the commands that act on one projection (replay, retry, skip): all but the metrics server's. */
export const COMMAND_SETTINGS = SETTINGS.map((s) => s.key).filter((k) => !['metricsHost', 'metricsPort', 'watchdogMs'].includes(k));

/**
 * The projection a command acts on, loaded from --projections, with the command's logger (warnings and errors only
 * at the default level: the command's own lines are its output). An unknown name is an UnknownProjectionError listing
 * the known ones.
 */
export async function projectionNamed(name: string, config: RunnerConfig): Promise<{ projection: Projection; log: Logger }> {
  const log = createLogger(config.logLevel === 'info' ? 'warn' : config.logLevel);
  const projections = await loadProjections(config.projections);
  const projection = projections.find((p) => p.name === name);
  if (!projection)
    throw new UnknownProjectionError(
      name,
      projections.map((p) => p.name),
    );
  return { projection, log };
}
