import type { Logger } from 'pino';
import { RUNNER_SETTINGS, type RunnerConfig, type RunnerSettings } from '../config.js';
import type { Projection } from '../projection/projection.js';
import { Runner, type RunnerOptions } from '../runner/runner.js';

/*
 * Kept apart from options.ts: importing the Runner loads the whole daemon (metrics, listener, tracker…), which the
 * commands that never run one (status, wait, migrate, …) must not pay for at start.
 */

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
