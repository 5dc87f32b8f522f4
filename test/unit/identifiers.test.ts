import { describe, expect, it } from 'vitest';
import { ConfigError, EventStore } from '../../src/index.js';
import { quoteIdentifier, storeNames } from '../../src/db/identifiers.js';
import { parseDuration, resolveConfig } from '../../src/config.js';

describe('identifiers from configuration', () => {
  it.each([
    ['schema', { schema: 'public; drop table events' }],
    ['table', { table: 'events"; drop table x; --' }],
    ['channel', { channel: "events'); select 1; --" }],
    ['table', { table: 'Events' }],
    ['schema', { schema: '' }],
  ])('refuses a bad %s before any SQL is built', (setting, options) => {
    expect(() => storeNames(options)).toThrow(ConfigError);
    expect(() => storeNames(options)).toThrow(new RegExp(`invalid ${setting}`));
    expect(() => new EventStore({} as never, options)).toThrow(ConfigError);
  });

  it('quotes what it accepts', () => {
    expect(storeNames({ schema: 'app', table: 'my_events' }).q.events).toBe('"app"."my_events"');
    expect(quoteIdentifier('we"ird')).toBe('"we""ird"');
  });
});

describe('settings', () => {
  it.each([
    ['250ms', 250],
    ['10s', 10_000],
    ['2m', 120_000],
    ['1500', 1500],
    ['1.5s', 1500],
    ['7d', 604_800_000],
  ])('duration %s = %d ms', (text, ms) => expect(parseDuration(text)).toBe(ms));

  it('defaults, environment, flags: in that order of precedence', () => {
    expect(resolveConfig({}, {})).toMatchObject({
      gapTimeoutMs: 10_000,
      gapHistoryMs: 7 * 86_400_000,
      batchSize: 500,
      batchBytes: 16 * 1024 * 1024,
      metricsPort: 9464,
    });
    expect(resolveConfig({}, {}).lateWatchMs).toBeUndefined();
    expect(resolveConfig({}, { PROJECTION_RUNNER_GAP_TIMEOUT: '2s' }).gapTimeoutMs).toBe(2_000);
    expect(resolveConfig({ gapTimeoutMs: '3s' }, { PROJECTION_RUNNER_GAP_TIMEOUT: '2s' }).gapTimeoutMs).toBe(3_000);
  });

  it('refuses a batch byte bound below 1 KiB, naming the setting and its variable', () => {
    expect(() => resolveConfig({}, { PROJECTION_RUNNER_BATCH_BYTES: '10' })).toThrow(
      /invalid --batch-bytes \(PROJECTION_RUNNER_BATCH_BYTES\)/,
    );
  });
});
