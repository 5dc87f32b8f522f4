import pino from 'pino';
import { Runner, type RunnerOptions } from '../../src/index.js';
import type { TestDatabase } from './database.js';

/** A runner in this process against a test database; stopped by the returned function. */
export async function startRunner(db: TestDatabase, options: Partial<RunnerOptions> & Pick<RunnerOptions, 'projections'>) {
  const runner = new Runner({
    connectionString: db.url,
    log: pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' }),
    gapTimeoutMs: 60_000,
    pollIntervalMs: 100,
    gapEvidence: 'off',
    ...options,
  });
  await runner.start();
  return runner;
}
