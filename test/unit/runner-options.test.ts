import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { ConfigError } from '../../src/errors.js';
import { Runner, type RunnerOptions } from '../../src/index.js';
import { resolveRunnerSettings } from '../../src/config.js';

const base = { connectionString: 'postgres://u@localhost/db', projections: [], log: pino({ level: 'silent' }) };

describe('new Runner({...}) takes the settings through the same door as the CLI', () => {
  it.each<[Partial<RunnerOptions>, RegExp]>([
    [{ batchSize: 0 }, /RunnerOptions\.batchSize \(--batch-size, PROJECTION_RUNNER_BATCH_SIZE\).*0 is outside 1\.\.100000/],
    [{ batchSize: 2.5 }, /--batch-size.*2\.5 is not an integer/],
    [{ handlerRetries: -1 }, /--handler-retries.*outside 0\.\.100/],
    [{ gapTimeoutMs: 0 }, /--gap-timeout, PROJECTION_RUNNER_GAP_TIMEOUT.*greater than 0/],
    [{ pollIntervalMs: Number.NaN }, /--poll-interval.*greater than 0/],
    [{ batchBytes: 10 }, /--batch-bytes.*outside 1024\.\./],
    [{ onError: 'ignore' as never }, /--on-error.*must be one of stop, skip/],
    [{ gapEvidence: 'on' as never }, /--gap-evidence.*must be one of auto, off/],
    [{ schema: 'bad-name' }, /--schema/],
  ])('refuses %o with a ConfigError naming the setting', (bad, message) => {
    const attempt = () => new Runner({ ...base, ...bad });
    expect(attempt).toThrow(ConfigError);
    expect(attempt).toThrow(message);
  });

  it('gets the defaults the CLI documents', () => {
    expect(resolveRunnerSettings({})).toEqual({
      schema: 'public',
      table: 'events',
      channel: 'events',
      source: 'native',
      columnPosition: 'global_position',
      columnStream: 'stream_name',
      columnStreamPosition: 'stream_position',
      columnType: 'type',
      columnData: 'data',
      columnMetadata: 'metadata',
      columnRecordedAt: 'recorded_at',
      noNotifyTrigger: false,
      gapTimeoutMs: 10_000,
      gapHistoryMs: 7 * 86_400_000,
      fenceDelayMs: 1_000,
      gapEvidence: 'auto',
      pollIntervalMs: 1_000,
      followIntervalMs: 5,
      followAbove: 500,
      batchSize: 500,
      batchBytes: 16 * 1024 * 1024,
      maxConcurrentBatches: 8,
      handlerRetries: 3,
      switchMode: 'auto',
    });
    expect(resolveRunnerSettings({ batchSize: 7, onError: 'skip' })).toMatchObject({ batchSize: 7, onError: 'skip' });
  });
});
