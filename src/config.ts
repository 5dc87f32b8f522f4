import { ConfigError } from './errors.js';
import { parseQualifiedTable, SOURCE_KINDS, validateIdentifier, type SourceKind } from './db/identifiers.js';
import { ERROR_POLICIES, SWITCH_MODES, type ErrorPolicy, type SwitchMode } from './projection/projection.js';

/**
 * Every setting of the daemon in one table: flag, environment variable, default, parser. Values are validated at
 * the door with a message that names the setting; the rest of the code trusts the typed `RunnerConfig`.
 */

export function parseDuration(text: string): number {
  const match = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$/.exec(text);
  if (!match) throw new Error(`"${text}" is not a duration (examples: 250ms, 10s, 2m, 7d, or plain milliseconds)`);
  const factor = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[(match[2] ?? 'ms') as 'ms' | 's' | 'm' | 'h' | 'd'];
  return Math.round(Number(match[1]) * factor);
}

/**
 * How a setting's value is read from text (flag, env variable, default) and checked. `check` also serves the values
 * a library user passes to `new Runner({...})` already typed, so both doors enforce the same rules.
 */
interface ValueRules<T> {
  read: (text: string) => T;
  check?: (value: T) => void;
}

function integer(min: number, max = Number.MAX_SAFE_INTEGER): ValueRules<number> {
  return {
    read: (text) => {
      if (!/^\s*-?\d+\s*$/.test(text)) throw new Error(`"${text}" is not an integer`);
      return Number(text);
    },
    check: (n) => {
      if (!Number.isSafeInteger(n)) throw new Error(`${n} is not an integer`);
      if (n < min || n > max) throw new Error(`${n} is outside ${min}..${max}`);
    },
  };
}

const positiveDuration: ValueRules<number> = {
  read: parseDuration,
  check: (ms) => {
    if (!Number.isFinite(ms) || ms <= 0) throw new Error(`must be greater than 0 (got ${ms} ms)`);
  },
};

function oneOf<T extends string>(values: readonly T[]): ValueRules<T> {
  return {
    read: (text) => text as T,
    check: (value) => {
      if (!values.includes(value)) throw new Error(`must be one of ${values.join(', ')} (got ${JSON.stringify(value)})`);
    },
  };
}

const anyText: ValueRules<string> = { read: (text) => text };

/** A flag without a value (`--no-notify-trigger`); its environment variable says true or false. */
const onOff: ValueRules<boolean> & { switch: true } = {
  switch: true,
  read: (text) => {
    if (/^\s*(true|1|yes|on)\s*$/i.test(text)) return true;
    if (/^\s*(false|0|no|off)\s*$/i.test(text)) return false;
    throw new Error(`"${text}" is not true or false`);
  },
  check: (value) => {
    if (typeof value !== 'boolean') throw new Error(`${String(value)} is not true or false`);
  },
};

/** A custom source's column: a plain identifier (metadata may also be `none`). */
const column = (name: string, orNone = false): ValueRules<string> => ({
  read: (text) => text,
  check: (value) => {
    if (!(orNone && value === 'none')) validateIdentifier(name, value);
  },
});

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export const LOG_FORMATS = ['json', 'pretty'] as const;

export interface RunnerConfig {
  databaseUrl: string | undefined;
  projections: string;
  schema: string;
  table: string;
  channel: string;
  source: SourceKind;
  eventsTable: string | undefined;
  columnPosition: string;
  columnStream: string;
  columnStreamPosition: string;
  columnType: string;
  columnData: string;
  columnMetadata: string;
  columnRecordedAt: string;
  noNotifyTrigger: boolean;
  gapTimeoutMs: number;
  /** Deprecated and ignored: given-up gaps are watched until proven unfillable. Kept so old deployments still start. */
  lateWatchMs: number | undefined;
  gapHistoryMs: number;
  fenceDelayMs: number;
  gapEvidence: 'auto' | 'off';
  pollIntervalMs: number;
  followIntervalMs: number;
  followAbove: number;
  batchSize: number;
  batchBytes: number;
  maxConcurrentBatches: number;
  handlerRetries: number;
  /** Undefined: each projection's own onError (default stop). */
  onError: ErrorPolicy | undefined;
  /** Whether a new version becomes live by itself once built (auto) or on `projection-runner switch` (manual). */
  switchMode: SwitchMode;
  shutdownTimeoutMs: number;
  watchdogMs: number;
  logLevel: (typeof LOG_LEVELS)[number];
  /** Undefined: pretty when stderr is a terminal, else json. */
  logFormat: (typeof LOG_FORMATS)[number] | undefined;
  /** How long a command waits for its request to be taken up before it withdraws it. */
  requestTimeoutMs: number;
  metricsHost: string;
  metricsPort: number;
}

interface Setting<K extends keyof RunnerConfig> extends ValueRules<NonNullable<RunnerConfig[K]>> {
  key: K;
  flag: string;
  env: string;
  /** Text default as shown in --help and the README; undefined: none. */
  default: string | undefined;
  description: string;
  /** A flag without a value (`--no-…`): given means true. */
  switch?: true;
}

const setting = <K extends keyof RunnerConfig>(s: Setting<K>) => s;
const identifier = (name: string): ValueRules<string> => ({ read: (text) => text, check: (value) => void validateIdentifier(name, value) });

// Hand-aligned, one setting per entry: read as a table (the README's configuration table is tested against it).
// prettier-ignore
export const SETTINGS = [
  setting({ key: 'databaseUrl', flag: 'database-url', env: 'DATABASE_URL', default: undefined,
    description: 'PostgreSQL connection string; without it an embedded PostgreSQL is started under .data/',
    read: (t) => t,
    check: (t) => {
      if (!/^postgres(ql)?:\/\//.test(t)) throw new Error('must start with postgres:// or postgresql://');
    } }),
  setting({ key: 'projections', flag: 'projections', env: 'PROJECTION_RUNNER_PROJECTIONS', default: 'projections',
    description: 'folder of projection modules (.js/.mjs; .ts under tsx)', ...anyText }),
  setting({ key: 'schema', flag: 'schema', env: 'PROJECTION_RUNNER_SCHEMA', default: 'public',
    description: 'schema of the events table and the runner tables', ...identifier('schema') }),
  setting({ key: 'table', flag: 'table', env: 'PROJECTION_RUNNER_TABLE', default: 'events',
    description: 'events table', ...identifier('table') }),
  setting({ key: 'channel', flag: 'channel', env: 'PROJECTION_RUNNER_CHANNEL', default: 'events',
    description: 'NOTIFY channel of the writer', ...identifier('channel') }),
  setting({ key: 'source', flag: 'source', env: 'PROJECTION_RUNNER_SOURCE', default: 'native',
    description: `where the events are: ${SOURCE_KINDS.join(', ')} (see "Event sources")`, ...oneOf(SOURCE_KINDS) }),
  setting({ key: 'eventsTable', flag: 'events-table', env: 'PROJECTION_RUNNER_EVENTS_TABLE', default: undefined,
    description: 'a foreign source\'s table, schema.table (custom: required; message-db: message_store.messages; emmett: public.emt_messages)',
    read: (t) => t, check: (t) => void parseQualifiedTable('events-table', t) }),
  setting({ key: 'columnPosition', flag: 'column-position', env: 'PROJECTION_RUNNER_COLUMN_POSITION', default: 'global_position',
    description: 'custom source: the global position (integer, from a sequence or an identity)', ...column('column-position') }),
  setting({ key: 'columnStream', flag: 'column-stream', env: 'PROJECTION_RUNNER_COLUMN_STREAM', default: 'stream_name',
    description: 'custom source: the stream name (text)', ...column('column-stream') }),
  setting({ key: 'columnStreamPosition', flag: 'column-stream-position', env: 'PROJECTION_RUNNER_COLUMN_STREAM_POSITION', default: 'stream_position',
    description: 'custom source: the position in the stream (integer, passed as is)', ...column('column-stream-position') }),
  setting({ key: 'columnType', flag: 'column-type', env: 'PROJECTION_RUNNER_COLUMN_TYPE', default: 'type',
    description: 'custom source: the event type (text)', ...column('column-type') }),
  setting({ key: 'columnData', flag: 'column-data', env: 'PROJECTION_RUNNER_COLUMN_DATA', default: 'data',
    description: 'custom source: the event data (jsonb or json)', ...column('column-data') }),
  setting({ key: 'columnMetadata', flag: 'column-metadata', env: 'PROJECTION_RUNNER_COLUMN_METADATA', default: 'metadata',
    description: 'custom source: the metadata (jsonb or json; NULL reads as {}), or none', ...column('column-metadata', true) }),
  setting({ key: 'columnRecordedAt', flag: 'column-recorded-at', env: 'PROJECTION_RUNNER_COLUMN_RECORDED_AT', default: 'recorded_at',
    description: 'custom source: when the event was recorded (timestamptz)', ...column('column-recorded-at') }),
  setting({ key: 'noNotifyTrigger', flag: 'no-notify-trigger', env: 'PROJECTION_RUNNER_NO_NOTIFY_TRIGGER', default: 'false',
    description: 'foreign sources: migrate leaves the table alone, no NOTIFY trigger (the runner wakes on --poll-interval)', ...onOff }),
  setting({ key: 'gapTimeoutMs', flag: 'gap-timeout', env: 'PROJECTION_RUNNER_GAP_TIMEOUT', default: '10s',
    description: 'a gap still missing this long after first seen is declared dead (timed_out)', ...positiveDuration }),
  setting({ key: 'lateWatchMs', flag: 'late-watch', env: 'PROJECTION_RUNNER_LATE_WATCH', default: undefined,
    description: 'deprecated, ignored with a warning: a given-up gap is watched until PostgreSQL proves nothing can fill it',
    ...positiveDuration }),
  setting({ key: 'fenceDelayMs', flag: 'fence-delay', env: 'PROJECTION_RUNNER_FENCE_DELAY', default: '1s',
    description: 'a given-up gap can be proven unfillable only by transactions that began this long after it was seen; raise it for writers that call nextval() and write later',
    ...positiveDuration }),
  setting({ key: 'gapHistoryMs', flag: 'gap-history', env: 'PROJECTION_RUNNER_GAP_HISTORY', default: '7d',
    description: 'settled and filled gaps older than this are pruned from projection_gaps (open and watched gaps stay)',
    ...positiveDuration }),
  setting({ key: 'gapEvidence', flag: 'gap-evidence', env: 'PROJECTION_RUNNER_GAP_EVIDENCE', default: 'auto',
    description: 'auto: declare gaps dead at once when pg_stat_activity proves no open transaction can fill them; off: timeout only',
    ...oneOf(['auto', 'off'] as const) }),
  setting({ key: 'pollIntervalMs', flag: 'poll-interval', env: 'PROJECTION_RUNNER_POLL_INTERVAL', default: '1s',
    description: 'how often the runner looks for new events while it sleeps (no event for a moment): writers wake it with a NOTIFY meanwhile, this is the fallback',
    ...positiveDuration }),
  setting({ key: 'followIntervalMs', flag: 'follow-interval', env: 'PROJECTION_RUNNER_FOLLOW_INTERVAL', default: '5ms',
    description: 'how often the high-water leader looks for new events while they flow (writers send no NOTIFY meanwhile; twice that after a look that found 24 or more); it sleeps after 10 looks that find nothing',
    ...positiveDuration }),
  setting({ key: 'followAbove', flag: 'follow-above', env: 'PROJECTION_RUNNER_FOLLOW_ABOVE', default: '500',
    description: 'the write rate (events per second) from which the high-water leader follows the head itself and writers send no NOTIFY; below it writers notify and it sleeps between their NOTIFYs (0: follow whenever events flow)',
    ...integer(0, 1_000_000) }),
  setting({ key: 'batchSize', flag: 'batch-size', env: 'PROJECTION_RUNNER_BATCH_SIZE', default: '500',
    description: 'events per transaction when live; grows up to 10x while catching up', ...integer(1, 100_000) }),
  setting({ key: 'batchBytes', flag: 'batch-bytes', env: 'PROJECTION_RUNNER_BATCH_BYTES', default: '16777216',
    description: 'stored bytes (data + metadata) per batch read, whatever the count; at least one event is read',
    ...integer(1_024) }),
  setting({ key: 'maxConcurrentBatches', flag: 'max-concurrent-batches', env: 'PROJECTION_RUNNER_MAX_CONCURRENT_BATCHES', default: '8',
    description: "batch transactions this instance runs at once, all projections together; the others wait their turn in order (raise it when the database's cores outnumber the projections' writes)",
    ...integer(1, 1_000) }),
  setting({ key: 'handlerRetries', flag: 'handler-retries', env: 'PROJECTION_RUNNER_HANDLER_RETRIES', default: '3',
    description: 'retries of a failing batch before the projection is marked failed', ...integer(0, 100) }),
  // No default here: without the flag, each projection module's own onError applies (and 'stop' without one).
  setting({ key: 'onError', flag: 'on-error', env: 'PROJECTION_RUNNER_ON_ERROR', default: undefined,
    description: "stop: mark the projection failed at an event its handler keeps failing on; skip: dead-letter the event and go on (overrides the module's onError; default stop)",
    ...oneOf(ERROR_POLICIES) }),
  setting({ key: 'switchMode', flag: 'switch', env: 'PROJECTION_RUNNER_SWITCH', default: 'auto',
    description: 'a new version of a projection, once built beside the live one: auto, it becomes live at once; manual, on `projection-runner switch NAME`',
    ...oneOf(SWITCH_MODES) }),
  setting({ key: 'shutdownTimeoutMs', flag: 'shutdown-timeout', env: 'PROJECTION_RUNNER_SHUTDOWN_TIMEOUT', default: '10s',
    description: 'on SIGTERM/SIGINT, finish the current batch within this time, then exit', ...positiveDuration }),
  setting({ key: 'watchdogMs', flag: 'watchdog', env: 'PROJECTION_RUNNER_WATCHDOG', default: '60s',
    description: '/healthz turns 503 when a loop has not completed a pass for this long', ...positiveDuration }),
  setting({ key: 'logLevel', flag: 'log-level', env: 'PROJECTION_RUNNER_LOG_LEVEL', default: 'info',
    description: `one of ${LOG_LEVELS.join(', ')}`,
    ...oneOf(LOG_LEVELS) }),
  // No default: a person at a terminal reads lines, a collector reads JSON (src/logger.ts).
  setting({ key: 'logFormat', flag: 'log-format', env: 'PROJECTION_RUNNER_LOG_FORMAT', default: undefined,
    description: 'json: one JSON object per line; pretty: readable lines (default: pretty when stderr is a terminal, else json)',
    ...oneOf(LOG_FORMATS) }),
  setting({ key: 'requestTimeoutMs', flag: 'request-timeout', env: 'PROJECTION_RUNNER_REQUEST_TIMEOUT', default: '30s',
    description: 'replay, retry, skip, rebuild, switch: a request nobody takes up within this time is withdrawn (exit 1)',
    ...positiveDuration }),
  setting({ key: 'metricsHost', flag: 'metrics-host', env: 'PROJECTION_RUNNER_METRICS_HOST', default: '0.0.0.0',
    description: 'address of the /metrics, /healthz, /readyz server', ...anyText }),
  setting({ key: 'metricsPort', flag: 'metrics-port', env: 'PROJECTION_RUNNER_METRICS_PORT', default: '9464',
    description: 'port of the metrics server; 0 disables it', ...integer(0, 65_535) }),
] as const;

export type SettingKey = (typeof SETTINGS)[number]['key'];

/**
 * Resolves the config: flag value, else environment variable, else default. `flags` are the raw strings commander
 * collected (keyed by setting key). Throws ConfigError naming the flag and its environment variable.
 */
export function resolveConfig(flags: Partial<Record<SettingKey, string>>, env: NodeJS.ProcessEnv = process.env): RunnerConfig {
  const config: Partial<Record<SettingKey, unknown>> = {};
  for (const s of SETTINGS) {
    const fromFlag = flags[s.key];
    const fromEnv = env[s.env] ?? (s.key === 'databaseUrl' ? env.PROJECTION_RUNNER_DATABASE_URL : undefined);
    const raw = fromFlag ?? (fromEnv === '' ? undefined : fromEnv) ?? s.default;
    if (raw === undefined) continue;
    const rules = s as ValueRules<unknown>;
    config[s.key] = checked(rules, `--${s.flag} (${s.env})`, () => rules.read(raw));
  }
  return config as RunnerConfig;
}

/** A setting's value read (or given) and checked; any complaint becomes a ConfigError naming `where`. */
function checked<T>(rules: ValueRules<T>, where: string, value: () => T): T {
  try {
    const v = value();
    (rules.check as ((value: T) => void) | undefined)?.(v);
    return v;
  } catch (error) {
    throw new ConfigError(where, (error as Error).message.replace(/^invalid \S+: /, ''));
  }
}

/** The settings that say where the events and the runner's tables are: every command that opens the store takes them. */
export const STORE_SETTINGS = [
  'schema',
  'table',
  'channel',
  'source',
  'eventsTable',
  'columnPosition',
  'columnStream',
  'columnStreamPosition',
  'columnType',
  'columnData',
  'columnMetadata',
  'columnRecordedAt',
  'noNotifyTrigger',
] as const satisfies readonly SettingKey[];

/** The settings a Runner takes as options (the rest belong to the CLI: metrics server, logging, shutdown). */
export const RUNNER_SETTINGS = [
  ...STORE_SETTINGS,
  'gapTimeoutMs',
  'gapHistoryMs',
  'fenceDelayMs',
  'gapEvidence',
  'pollIntervalMs',
  'followIntervalMs',
  'followAbove',
  'batchSize',
  'batchBytes',
  'maxConcurrentBatches',
  'handlerRetries',
  'onError',
  'switchMode',
] as const satisfies readonly SettingKey[];
export type RunnerSettings = Pick<RunnerConfig, (typeof RUNNER_SETTINGS)[number]>;

/**
 * The Runner's settings from what a library user passed: the same defaults as the CLI's (read from the same table)
 * and the same checks, so `new Runner({ batchSize: 0 })` stops with the message `--batch-size` would give.
 */
export function resolveRunnerSettings(given: Partial<RunnerSettings>): RunnerSettings {
  const resolved: Partial<Record<SettingKey, unknown>> = {};
  for (const s of SETTINGS) {
    if (!(RUNNER_SETTINGS as readonly string[]).includes(s.key)) continue;
    const rules = s as ValueRules<unknown>;
    const value: unknown = given[s.key as keyof RunnerSettings];
    const where = `RunnerOptions.${s.key} (--${s.flag}, ${s.env})`;
    if (value !== undefined) resolved[s.key] = checked(rules, where, () => value);
    else if (s.default !== undefined) resolved[s.key] = checked(rules, where, () => rules.read(s.default!));
  }
  return resolved as RunnerSettings;
}
