import { ConfigError } from './errors.js';
import { validateIdentifier } from './db/identifiers.js';
import { ERROR_POLICIES, type ErrorPolicy } from './projection/projection.js';

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

function parseInteger(min: number, max = Number.MAX_SAFE_INTEGER) {
  return (text: string): number => {
    if (!/^\s*-?\d+\s*$/.test(text)) throw new Error(`"${text}" is not an integer`);
    const n = Number(text);
    if (n < min || n > max) throw new Error(`${n} is outside ${min}..${max}`);
    return n;
  };
}

function positiveDuration(text: string): number {
  const ms = parseDuration(text);
  if (ms <= 0) throw new Error(`must be greater than 0 (got "${text}")`);
  return ms;
}

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;

export interface RunnerConfig {
  databaseUrl: string | undefined;
  projections: string;
  schema: string;
  table: string;
  channel: string;
  gapTimeoutMs: number;
  /** Deprecated and ignored: given-up gaps are watched until proven unfillable. Kept so old deployments still start. */
  lateWatchMs: number | undefined;
  gapHistoryMs: number;
  fenceDelayMs: number;
  gapEvidence: 'auto' | 'off';
  pollIntervalMs: number;
  batchSize: number;
  batchBytes: number;
  handlerRetries: number;
  /** Undefined: each projection's own onError (default stop). */
  onError: ErrorPolicy | undefined;
  shutdownTimeoutMs: number;
  watchdogMs: number;
  logLevel: (typeof LOG_LEVELS)[number];
  metricsHost: string;
  metricsPort: number;
}

interface Setting<K extends keyof RunnerConfig> {
  key: K;
  flag: string;
  env: string;
  /** Text default as shown in --help and the README; undefined: none. */
  default: string | undefined;
  description: string;
  parse: (text: string) => RunnerConfig[K];
}

const setting = <K extends keyof RunnerConfig>(s: Setting<K>) => s;
const identifier = (name: string) => (text: string) => validateIdentifier(name, text);

export const SETTINGS = [
  setting({ key: 'databaseUrl', flag: 'database-url', env: 'DATABASE_URL', default: undefined,
    description: 'PostgreSQL connection string; without it an embedded PostgreSQL is started under .data/',
    parse: (t) => {
      if (!/^postgres(ql)?:\/\//.test(t)) throw new Error('must start with postgres:// or postgresql://');
      return t;
    } }),
  setting({ key: 'projections', flag: 'projections', env: 'PROJECTION_RUNNER_PROJECTIONS', default: 'projections',
    description: 'folder of projection modules (.js/.mjs; .ts under tsx)', parse: (t) => t }),
  setting({ key: 'schema', flag: 'schema', env: 'PROJECTION_RUNNER_SCHEMA', default: 'public',
    description: 'schema of the events table and the runner tables', parse: identifier('schema') }),
  setting({ key: 'table', flag: 'table', env: 'PROJECTION_RUNNER_TABLE', default: 'events',
    description: 'events table', parse: identifier('table') }),
  setting({ key: 'channel', flag: 'channel', env: 'PROJECTION_RUNNER_CHANNEL', default: 'events',
    description: 'NOTIFY channel of the writer', parse: identifier('channel') }),
  setting({ key: 'gapTimeoutMs', flag: 'gap-timeout', env: 'PROJECTION_RUNNER_GAP_TIMEOUT', default: '10s',
    description: 'a gap still missing this long after first seen is declared dead (timed_out)', parse: positiveDuration }),
  setting({ key: 'lateWatchMs', flag: 'late-watch', env: 'PROJECTION_RUNNER_LATE_WATCH', default: undefined,
    description: 'deprecated, ignored with a warning: a given-up gap is watched until PostgreSQL proves nothing can fill it',
    parse: positiveDuration }),
  setting({ key: 'fenceDelayMs', flag: 'fence-delay', env: 'PROJECTION_RUNNER_FENCE_DELAY', default: '1s',
    description: 'a given-up gap can be proven unfillable only by transactions that began this long after it was seen; raise it for writers that call nextval() and write later',
    parse: positiveDuration }),
  setting({ key: 'gapHistoryMs', flag: 'gap-history', env: 'PROJECTION_RUNNER_GAP_HISTORY', default: '7d',
    description: 'settled and filled gaps older than this are pruned from projection_gaps (open and watched gaps stay)',
    parse: positiveDuration }),
  setting({ key: 'gapEvidence', flag: 'gap-evidence', env: 'PROJECTION_RUNNER_GAP_EVIDENCE', default: 'auto',
    description: 'auto: declare gaps dead at once when pg_stat_activity proves no open transaction can fill them; off: timeout only',
    parse: (t) => {
      if (t !== 'auto' && t !== 'off') throw new Error('must be auto or off');
      return t;
    } }),
  setting({ key: 'pollIntervalMs', flag: 'poll-interval', env: 'PROJECTION_RUNNER_POLL_INTERVAL', default: '1s',
    description: 'fallback poll when no notification arrives', parse: positiveDuration }),
  setting({ key: 'batchSize', flag: 'batch-size', env: 'PROJECTION_RUNNER_BATCH_SIZE', default: '500',
    description: 'events per transaction when live; grows up to 10x while catching up', parse: parseInteger(1, 100_000) }),
  setting({ key: 'batchBytes', flag: 'batch-bytes', env: 'PROJECTION_RUNNER_BATCH_BYTES', default: '16777216',
    description: 'stored bytes (data + metadata) per batch read, whatever the count; at least one event is read',
    parse: parseInteger(1_024) }),
  setting({ key: 'handlerRetries', flag: 'handler-retries', env: 'PROJECTION_RUNNER_HANDLER_RETRIES', default: '3',
    description: 'retries of a failing batch before the projection is marked failed', parse: parseInteger(0, 100) }),
  // No default here: without the flag, each projection module's own onError applies (and 'stop' without one).
  setting({ key: 'onError', flag: 'on-error', env: 'PROJECTION_RUNNER_ON_ERROR', default: undefined,
    description: "stop: mark the projection failed at an event its handler keeps failing on; skip: dead-letter the event and go on (overrides the module's onError; default stop)",
    parse: (t) => {
      if (!(ERROR_POLICIES as readonly string[]).includes(t)) throw new Error(`must be one of ${ERROR_POLICIES.join(', ')}`);
      return t as ErrorPolicy;
    } }),
  setting({ key: 'shutdownTimeoutMs', flag: 'shutdown-timeout', env: 'PROJECTION_RUNNER_SHUTDOWN_TIMEOUT', default: '10s',
    description: 'on SIGTERM/SIGINT, finish the current batch within this time, then exit', parse: positiveDuration }),
  setting({ key: 'watchdogMs', flag: 'watchdog', env: 'PROJECTION_RUNNER_WATCHDOG', default: '60s',
    description: '/healthz turns 503 when a loop has not completed a pass for this long', parse: positiveDuration }),
  setting({ key: 'logLevel', flag: 'log-level', env: 'PROJECTION_RUNNER_LOG_LEVEL', default: 'info',
    description: `one of ${LOG_LEVELS.join(', ')}`,
    parse: (t) => {
      if (!(LOG_LEVELS as readonly string[]).includes(t)) throw new Error(`must be one of ${LOG_LEVELS.join(', ')}`);
      return t as RunnerConfig['logLevel'];
    } }),
  setting({ key: 'metricsHost', flag: 'metrics-host', env: 'PROJECTION_RUNNER_METRICS_HOST', default: '0.0.0.0',
    description: 'address of the /metrics, /healthz, /readyz server', parse: (t) => t }),
  setting({ key: 'metricsPort', flag: 'metrics-port', env: 'PROJECTION_RUNNER_METRICS_PORT', default: '9464',
    description: 'port of the metrics server; 0 disables it', parse: parseInteger(0, 65_535) }),
] as const;

export type SettingKey = (typeof SETTINGS)[number]['key'];

/**
 * Resolves the config: flag value, else environment variable, else default. `flags` are the raw strings commander
 * collected (keyed by setting key). Throws ConfigError naming the flag and its environment variable.
 */
export function resolveConfig(
  flags: Partial<Record<SettingKey, string>>,
  env: NodeJS.ProcessEnv = process.env,
): RunnerConfig {
  const config: Partial<Record<SettingKey, unknown>> = {};
  for (const s of SETTINGS) {
    const fromFlag = flags[s.key];
    const fromEnv = env[s.env] ?? (s.key === 'databaseUrl' ? env.PROJECTION_RUNNER_DATABASE_URL : undefined);
    const raw = fromFlag ?? (fromEnv === '' ? undefined : fromEnv) ?? s.default;
    if (raw === undefined) continue;
    try {
      config[s.key] = s.parse(raw);
    } catch (error) {
      if (error instanceof ConfigError) throw new ConfigError(`--${s.flag} (${s.env})`, error.message.replace(/^invalid \S+: /, ''));
      throw new ConfigError(`--${s.flag} (${s.env})`, (error as Error).message);
    }
  }
  return config as RunnerConfig;
}
