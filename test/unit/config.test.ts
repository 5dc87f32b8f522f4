import { describe, expect, it } from 'vitest';
import { parseDuration, resolveConfig, SETTINGS, type SettingKey } from '../../src/config.js';
import { ConfigError } from '../../src/errors.js';

/** The ConfigError `fn` throws (fails the test when it throws nothing or something else). */
function configError(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    return error as ConfigError;
  }
  throw new Error('expected a ConfigError, nothing was thrown');
}

describe('parseDuration', () => {
  it.each([
    ['0', 0],
    ['250', 250],
    ['250ms', 250],
    ['10s', 10_000],
    ['1.5s', 1_500],
    ['2m', 120_000],
    ['3h', 10_800_000],
    ['7d', 604_800_000],
    ['  10 s  ', 10_000],
    ['0.0004s', 0],
    ['2.5ms', 3],
  ])('%j is %d ms', (text, ms) => {
    expect(parseDuration(text)).toBe(ms);
  });

  it.each(['', 'ten', '10 seconds', '10S', '-1s', '1e3', '.5s', '5s5', '10w', 's'])(
    '%j is not a duration, and the message quotes it',
    (text) => {
      expect(() => parseDuration(text)).toThrow(`"${text}" is not a duration`);
    },
  );
});

/** Two valid texts per setting (one for the flag, one for the environment) and what each resolves to. */
const SAMPLES: Partial<Record<SettingKey, [flag: string, flagValue: unknown, env: string, envValue: unknown]>> = {
  databaseUrl: ['postgres://flag/db', 'postgres://flag/db', 'postgresql://env/db', 'postgresql://env/db'],
  projections: ['flag-dir', 'flag-dir', 'env-dir', 'env-dir'],
  schema: ['from_flag', 'from_flag', 'from_env', 'from_env'],
  table: ['flag_events', 'flag_events', 'env_events', 'env_events'],
  channel: ['flag_channel', 'flag_channel', 'env_channel', 'env_channel'],
  source: ['emmett', 'emmett', 'custom', 'custom'],
  eventsTable: ['app.flag_events', 'app.flag_events', 'env_events', 'env_events'],
  columnPosition: ['flag_pos', 'flag_pos', 'env_pos', 'env_pos'],
  columnStream: ['flag_stream', 'flag_stream', 'env_stream', 'env_stream'],
  columnStreamPosition: ['flag_sp', 'flag_sp', 'env_sp', 'env_sp'],
  columnType: ['flag_type', 'flag_type', 'env_type', 'env_type'],
  columnData: ['flag_data', 'flag_data', 'env_data', 'env_data'],
  columnMetadata: ['none', 'none', 'env_meta', 'env_meta'],
  columnRecordedAt: ['flag_at', 'flag_at', 'env_at', 'env_at'],
  noNotifyTrigger: ['true', true, 'yes', true],
  gapTimeoutMs: ['3s', 3_000, '2s', 2_000],
  lateWatchMs: ['3m', 180_000, '2m', 120_000],
  fenceDelayMs: ['300ms', 300, '200', 200],
  gapHistoryMs: ['2d', 172_800_000, '1h', 3_600_000],
  gapEvidence: ['off', 'off', 'auto', 'auto'],
  pollIntervalMs: ['50ms', 50, '75ms', 75],
  followIntervalMs: ['2ms', 2, '20ms', 20],
  followAbove: ['0', 0, '2000', 2000],
  batchSize: ['7', 7, '9', 9],
  batchBytes: ['2048', 2_048, '4096', 4_096],
  maxConcurrentBatches: ['3', 3, '5', 5],
  handlerRetries: ['0', 0, '5', 5],
  onError: ['skip', 'skip', 'stop', 'stop'],
  switchMode: ['manual', 'manual', 'auto', 'auto'],
  shutdownTimeoutMs: ['1s', 1_000, '5s', 5_000],
  watchdogMs: ['90s', 90_000, '30s', 30_000],
  logLevel: ['debug', 'debug', 'warn', 'warn'],
  logFormat: ['pretty', 'pretty', 'json', 'json'],
  requestTimeoutMs: ['5s', 5_000, '2m', 120_000],
  metricsHost: ['127.0.0.1', '127.0.0.1', '::1', '::1'],
  metricsPort: ['0', 0, '9000', 9_000],
};

describe('resolveConfig', () => {
  it('without flags or environment: the documented defaults, and no value where there is no default', () => {
    const config = resolveConfig({}, {});
    expect(config).toMatchObject({
      projections: 'projections',
      schema: 'public',
      table: 'events',
      channel: 'events',
      gapTimeoutMs: 10_000,
      fenceDelayMs: 1_000,
      gapHistoryMs: 7 * 86_400_000,
      gapEvidence: 'auto',
      pollIntervalMs: 1_000,
      followIntervalMs: 5,
      followAbove: 500,
      batchSize: 500,
      batchBytes: 16 * 1024 * 1024,
      maxConcurrentBatches: 8,
      handlerRetries: 3,
      shutdownTimeoutMs: 10_000,
      watchdogMs: 60_000,
      logLevel: 'info',
      metricsHost: '0.0.0.0',
      metricsPort: 9_464,
    });
    expect(config.databaseUrl).toBeUndefined();
    expect(config.onError).toBeUndefined();
    expect(config.lateWatchMs).toBeUndefined();
  });

  describe.each(SETTINGS.map((s) => [s.key, s] as const))('%s', (key, s) => {
    const samples = () => {
      const found = SAMPLES[key];
      if (!found) throw new Error(`test/unit/config.test.ts: add precedence samples for the setting ${key}`);
      return found;
    };

    it('the flag wins over the environment variable', () => {
      const [flag, flagValue, env] = samples();
      expect(resolveConfig({ [key]: flag }, { [s.env]: env })[key]).toEqual(flagValue);
    });

    it('the environment variable wins over the default', () => {
      const [, , env, envValue] = samples();
      expect(resolveConfig({}, { [s.env]: env })[key]).toEqual(envValue);
    });

    it('an empty environment variable counts as unset', () => {
      expect(resolveConfig({}, { [s.env]: '' })[key]).toEqual(resolveConfig({}, {})[key]);
    });
  });

  it('PROJECTION_RUNNER_DATABASE_URL stands in for DATABASE_URL, which wins when both are set', () => {
    expect(resolveConfig({}, { PROJECTION_RUNNER_DATABASE_URL: 'postgres://alias/db' }).databaseUrl).toBe('postgres://alias/db');
    expect(
      resolveConfig({}, { PROJECTION_RUNNER_DATABASE_URL: 'postgres://alias/db', DATABASE_URL: 'postgres://main/db' }).databaseUrl,
    ).toBe('postgres://main/db');
    expect(
      resolveConfig({ databaseUrl: 'postgres://flag/db' }, { PROJECTION_RUNNER_DATABASE_URL: 'postgres://alias/db' }).databaseUrl,
    ).toBe('postgres://flag/db');
  });

  it('reads the process environment by default, and only the environment it is given otherwise', () => {
    const saved = process.env.PROJECTION_RUNNER_BATCH_SIZE;
    process.env.PROJECTION_RUNNER_BATCH_SIZE = '13';
    try {
      expect(resolveConfig({}).batchSize).toBe(13);
      expect(resolveConfig({}, {}).batchSize).toBe(500);
    } finally {
      if (saved === undefined) delete process.env.PROJECTION_RUNNER_BATCH_SIZE;
      else process.env.PROJECTION_RUNNER_BATCH_SIZE = saved;
    }
  });

  it.each([
    ['batchSize', 'lots', 'batch-size', 'PROJECTION_RUNNER_BATCH_SIZE', /"lots" is not an integer/],
    ['batchSize', '0', 'batch-size', 'PROJECTION_RUNNER_BATCH_SIZE', /0 is outside 1\.\.100000/],
    ['batchSize', '1.5', 'batch-size', 'PROJECTION_RUNNER_BATCH_SIZE', /"1.5" is not an integer/],
    ['batchBytes', '10', 'batch-bytes', 'PROJECTION_RUNNER_BATCH_BYTES', /10 is outside 1024\.\./],
    ['maxConcurrentBatches', '0', 'max-concurrent-batches', 'PROJECTION_RUNNER_MAX_CONCURRENT_BATCHES', /0 is outside 1\.\.1000/],
    ['handlerRetries', '101', 'handler-retries', 'PROJECTION_RUNNER_HANDLER_RETRIES', /101 is outside 0\.\.100/],
    ['metricsPort', '65536', 'metrics-port', 'PROJECTION_RUNNER_METRICS_PORT', /65536 is outside 0\.\.65535/],
    ['gapTimeoutMs', 'soon', 'gap-timeout', 'PROJECTION_RUNNER_GAP_TIMEOUT', /"soon" is not a duration/],
    ['gapTimeoutMs', '0s', 'gap-timeout', 'PROJECTION_RUNNER_GAP_TIMEOUT', /greater than 0/],
    ['pollIntervalMs', '0', 'poll-interval', 'PROJECTION_RUNNER_POLL_INTERVAL', /greater than 0/],
    ['followIntervalMs', '0ms', 'follow-interval', 'PROJECTION_RUNNER_FOLLOW_INTERVAL', /greater than 0/],
    ['followAbove', '-1', 'follow-above', 'PROJECTION_RUNNER_FOLLOW_ABOVE', /-1 is outside 0\.\.1000000/],
    ['gapEvidence', 'on', 'gap-evidence', 'PROJECTION_RUNNER_GAP_EVIDENCE', /must be one of auto, off.*"on"/],
    ['onError', 'drop', 'on-error', 'PROJECTION_RUNNER_ON_ERROR', /must be one of stop, skip.*"drop"/],
    ['logLevel', 'verbose', 'log-level', 'PROJECTION_RUNNER_LOG_LEVEL', /must be one of .*info.*"verbose"/],
    ['schema', 'Public', 'schema', 'PROJECTION_RUNNER_SCHEMA', /"Public" is not a valid identifier/],
    ['table', 'events; drop table x', 'table', 'PROJECTION_RUNNER_TABLE', /is not a valid identifier/],
    ['channel', "events'); --", 'channel', 'PROJECTION_RUNNER_CHANNEL', /is not a valid identifier/],
    ['databaseUrl', 'mysql://host/db', 'database-url', 'DATABASE_URL', /must start with postgres:\/\/ or postgresql:\/\//],
    ['source', 'eventstoredb', 'source', 'PROJECTION_RUNNER_SOURCE', /must be one of native, message-db, emmett, custom/],
    ['eventsTable', 'a.b.c', 'events-table', 'PROJECTION_RUNNER_EVENTS_TABLE', /"a\.b\.c" is not schema\.table/],
    ['eventsTable', 'App.events', 'events-table', 'PROJECTION_RUNNER_EVENTS_TABLE', /"App" is not a valid identifier/],
    ['columnStream', 'Stream', 'column-stream', 'PROJECTION_RUNNER_COLUMN_STREAM', /"Stream" is not a valid identifier/],
    ['noNotifyTrigger', 'maybe', 'no-notify-trigger', 'PROJECTION_RUNNER_NO_NOTIFY_TRIGGER', /"maybe" is not true or false/],
  ] as const)('%s = %j (from --%s or %s) is a ConfigError naming the flag and the variable', (key, text, flag, env, why) => {
    const where = `--${flag} (${env})`;
    for (const error of [configError(() => resolveConfig({ [key]: text }, {})), configError(() => resolveConfig({}, { [env]: text }))]) {
      expect(error.setting).toBe(where);
      expect(error.message).toMatch(new RegExp(`^invalid ${where.replace(/[()]/g, '\\$&')}: `));
      expect(error.message).toMatch(why);
      // The inner complaint is not wrapped twice ("invalid --schema (…): invalid schema: …").
      expect(error.message.match(/invalid /g)).toHaveLength(1);
    }
  });
});
