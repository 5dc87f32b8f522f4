import { Writable } from 'node:stream';
import pino from 'pino';
import { afterEach, beforeEach } from 'vitest';
import { EventStore, Runner, type RunnerOptions } from '../../src/index.js';
import { createTestDatabase, type TestDatabase } from './database.js';

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

/** A logger whose JSON lines the test can read back. */
export function capturingLogger() {
  const lines: Array<Record<string, unknown>> = [];
  const stream = new Writable({
    write(chunk, _encoding, done) {
      for (const line of String(chunk).split('\n').filter(Boolean)) lines.push(JSON.parse(line));
      done();
    },
  });
  return { log: pino({ level: 'info' }, stream), lines };
}

/**
 * The usual fixture of a runner test: a fresh database and a store before each test; after it, the runner (if the
 * test started one) stopped and the database dropped.
 */
export function useRunnerFixture() {
  const fixture = {} as { db: TestDatabase; store: EventStore; runner: Runner | undefined };
  beforeEach(async () => {
    fixture.db = await createTestDatabase();
    fixture.store = new EventStore(fixture.db.pool);
  });
  afterEach(async () => {
    await fixture.runner?.stop();
    fixture.runner = undefined;
    await fixture.db.drop();
  });
  return fixture;
}
