import { createHash } from 'node:crypto';
import { ConfigError } from '../errors.js';

/**
 * Every identifier that comes from configuration (schema, table, channel) passes through here: validated against a
 * conservative pattern, then quoted. Both, because quoting alone still lets "a; drop…" through as a (weird) name, and
 * validation alone breaks the day a rule is relaxed.
 */
const IDENTIFIER = /^[a-z_][a-z0-9_]{0,62}$/;

export function validateIdentifier(setting: string, value: string): string {
  if (!IDENTIFIER.test(value)) {
    throw new ConfigError(setting, `"${value}" is not a valid identifier (lower-case letters, digits, _; at most 63)`);
  }
  return value;
}

/** A SQL string literal (standard_conforming_strings, the default since PostgreSQL 9.1). */
/**
 * A string literal, as PostgreSQL's quote_literal makes it: with a backslash in the value, an E'' literal with the
 * backslashes doubled, so that the value means the same whatever standard_conforming_strings says.
 */
export function quoteLiteral(value: string): string {
  const quoted = value.replaceAll("'", "''");
  return value.includes('\\') ? `E'${quoted.replaceAll('\\', '\\\\')}'` : `'${quoted}'`;
}

export function quoteIdentifier(value: string): string {
  return `"${value.replaceAll('"', '""')}"`;
}

/** PostgreSQL keeps the first 63 bytes of a name (NAMEDATALEN - 1) and silently drops the rest. */
export const MAX_IDENTIFIER_BYTES = 63;
const MAX_NATIVE_TABLE_LENGTH = 61;

/**
 * A name built from settings (a trigger named after a channel or a table), as PostgreSQL will store it: unchanged when
 * it fits in 63 bytes; else its first 54 characters and 8 hex digits of its SHA-256, so that two long names that
 * PostgreSQL would have cut to the same 63 bytes stay apart. Built names are ASCII (validateIdentifier's pattern).
 */
export function fitIdentifier(name: string): string {
  if (Buffer.byteLength(name) <= MAX_IDENTIFIER_BYTES) return name;
  return `${name.slice(0, MAX_IDENTIFIER_BYTES - 9)}_${createHash('sha256').update(name).digest('hex').slice(0, 8)}`;
}

/**
 * The longest suffix the runner adds to `--channel` (`<channel>_high_water`; `<channel>_replay` is shorter). A
 * channel is a name too: LISTEN cuts a longer one to 63 bytes and pg_notify() refuses it ("channel name too long").
 */
const CHANNEL_SUFFIXES = ['_high_water', '_replay', '_wait', '_applied'] as const;
const MAX_CHANNEL_LENGTH = MAX_IDENTIFIER_BYTES - Math.max(...CHANNEL_SUFFIXES.map((s) => s.length));

/** Where the events come from (`--source`): the runner's own table, or another store's (src/sources/ reads it). */
export const SOURCE_KINDS = ['native', 'message-db', 'emmett', 'custom'] as const;
export type SourceKind = (typeof SOURCE_KINDS)[number];

/** The table each foreign source reads when `--events-table` is not given (their column mappings: src/sources/). */
const FOREIGN_DEFAULT_TABLES: Record<Exclude<SourceKind, 'native' | 'custom'>, [string, string]> = {
  'message-db': ['message_store', 'messages'],
  emmett: ['public', 'emt_messages'],
};

/** The columns of a custom source's table, one setting each (`--column-…`). */
export interface SourceColumns {
  position: string;
  stream: string;
  streamPosition: string;
  type: string;
  data: string;
  /** null: the table has none (`--column-metadata none`), handlers get {} */
  metadata: string | null;
  recordedAt: string;
}

export const DEFAULT_COLUMNS: SourceColumns = {
  position: 'global_position',
  stream: 'stream_name',
  streamPosition: 'stream_position',
  type: 'type',
  data: 'data',
  metadata: 'metadata',
  recordedAt: 'recorded_at',
};

export interface StoreNamesOptions {
  /** Schema holding the events table and the runner's tables. Default `public`. */
  schema?: string;
  /** Events table. Default `events`. */
  table?: string;
  /** NOTIFY channel the writer signals on. Default `events`. */
  channel?: string;
  /** Where the events are. Default `native` (the table above, created by migrate). */
  source?: SourceKind;
  /** A foreign source's table, `schema.table` (or `table`, in public). Required for `custom`. */
  eventsTable?: string;
  columnPosition?: string;
  columnStream?: string;
  columnStreamPosition?: string;
  columnType?: string;
  columnData?: string;
  columnMetadata?: string;
  columnRecordedAt?: string;
  /** A foreign source: migrate leaves its table alone (no NOTIFY trigger; the runner polls). */
  noNotifyTrigger?: boolean;
}

/**
 * The source as configured (validated names only; what they mean, and the catalog checks, are in src/sources/).
 * `schema`/`table`: the events table, unquoted; `q.events` is the same, quoted.
 */
export interface SourceSettings {
  kind: SourceKind;
  schema: string;
  table: string;
  /** The custom source's columns (the defaults for the others, which ignore them). */
  columns: SourceColumns;
  /** Attach the NOTIFY trigger to a foreign table (native: always, migration 5). */
  notifyTrigger: boolean;
}

/** Fully qualified, quoted names of every database object, computed once. */
export interface StoreNames {
  /** The schema of the runner's tables (and of the native events table). */
  schema: string;
  /** The events table's name: the native one, or the foreign one (lease and statement names use it). */
  table: string;
  channel: string;
  /** Where the events are: read them through src/sources/event-table.ts (eventTable(names)), never q.events. */
  source: SourceSettings;
  /** Channel the high-water leader uses to wake projectors in other instances. */
  highWaterChannel: string;
  /** Channel a replay request is announced on. */
  replayChannel: string;
  /** Channel a waiter (src/wait/) tells the daemons on that it waits for a higher position (q.raiseWaited). */
  waitChannel: string;
  /** Channel the daemons tell waiters on that a checkpoint moved, while a wait is pending (q.waited). */
  appliedChannel: string;
  q: {
    schema: string;
    /** The events table, quoted and qualified (the foreign one for a foreign source). */
    events: string;
    /** Native only, like sequenceLiteral, appendFunction and nextPositionFunction (migrations.ts). */
    sequence: string;
    sequenceLiteral: string;
    appendFunction: string;
    /** The column default of global_position: a transaction id first, then the sequence (migration 3). */
    nextPositionFunction: string;
    migrations: string;
    checkpoints: string;
    gaps: string;
    highWater: string;
    lateDeliveries: string;
    skippedPositions: string;
    replays: string;
    deadLetters: string;
    commands: string;
    /** The versions (builds) of each projection's read model and their roles (src/versions/). */
    builds: string;
    /** The stable names the application reads: views in the read schema over the live build's tables. */
    readViews: string;
    /**
     * The wake-up flag (a sequence, read and set outside any transaction): 1 while the high-water leader sleeps and
     * wants writers to NOTIFY, anything else while it follows the head itself (high-water/wake.ts).
     */
    wakeFlag: string;
    wakeFlagLiteral: string;
    /** Sets the flag as its owner (SECURITY DEFINER): the runner's role needs no grant on the sequence. */
    setWakeFlag: string;
    /**
     * The highest position waited for and until when (an unlogged one-row table, migration 13), read and raised only
     * through the two functions below, which run as their owner: the runner's role needs no grant on it.
     */
    waits: string;
    /** `(position, ttl ms, channel)`: raises the waited position (or its time to live) and notifies the daemons. */
    raiseWaited: string;
    /** `()`: `position/remaining ms` while a wait is pending, NULL otherwise. */
    waited: string;
  };
}

export function storeNames(options: StoreNamesOptions = {}): StoreNames {
  const schema = validateIdentifier('schema', options.schema ?? 'public');
  const channel = validateIdentifier('channel', options.channel ?? 'events');
  if (channel.length > MAX_CHANNEL_LENGTH) {
    throw new ConfigError(
      '--channel (PROJECTION_RUNNER_CHANNEL)',
      `"${channel}" has ${channel.length} characters, at most ${MAX_CHANNEL_LENGTH}: the runner also notifies ${channel}_high_water, and PostgreSQL channel names are at most ${MAX_IDENTIFIER_BYTES} bytes`,
    );
  }
  const source = sourceSettings(options, schema);
  const table = source.table;
  const qs = quoteIdentifier(schema);
  const qualified = (name: string) => `${qs}.${quoteIdentifier(name)}`;
  const sequence = qualified(`${table}_global_position_seq`);
  const native = source.kind === 'native';
  return {
    schema,
    table,
    channel,
    source,
    highWaterChannel: `${channel}${CHANNEL_SUFFIXES[0]}`,
    replayChannel: `${channel}${CHANNEL_SUFFIXES[1]}`,
    waitChannel: `${channel}${CHANNEL_SUFFIXES[2]}`,
    appliedChannel: `${channel}${CHANNEL_SUFFIXES[3]}`,
    q: {
      schema: qs,
      events: `${quoteIdentifier(source.schema)}.${quoteIdentifier(source.table)}`,
      sequence,
      // nextval()/pg_sequence_last_value() take a regclass literal: the quoted name inside a string literal.
      sequenceLiteral: quoteLiteral(sequence),
      appendFunction: qualified(`${table}_append`),
      nextPositionFunction: qualified(`${table}_next_position`),
      // A native table's migrations are named after it; a foreign source's are the runner's. Either way one runner
      // schema serves one events table (runner-schema.ts refuses a second).
      migrations: qualified(native ? `${table}_migrations` : 'projection_migrations'),
      checkpoints: qualified('projection_checkpoints'),
      gaps: qualified('projection_gaps'),
      highWater: qualified('projection_high_water'),
      lateDeliveries: qualified('projection_late_deliveries'),
      skippedPositions: qualified('projection_skipped_positions'),
      replays: qualified('projection_replays'),
      deadLetters: qualified('projection_dead_letters'),
      commands: qualified('projection_commands'),
      builds: qualified('projection_builds'),
      readViews: qualified('projection_read_views'),
      wakeFlag: qualified('projection_wake_flag'),
      wakeFlagLiteral: quoteLiteral(qualified('projection_wake_flag')),
      setWakeFlag: qualified('projection_set_wake_flag'),
      waits: qualified('projection_waits'),
      raiseWaited: qualified('projection_raise_waited'),
      waited: qualified('projection_waited'),
    },
  };
}

/** `schema.table` or `table` (in public), each part a valid identifier. */
export function parseQualifiedTable(setting: string, text: string): [string, string] {
  const parts = text.split('.');
  if (parts.length > 2) throw new ConfigError(setting, `"${text}" is not schema.table`);
  const [schema, table] = parts.length === 2 ? parts : ['public', parts[0]!];
  return [validateIdentifier(setting, schema!), validateIdentifier(setting, table!)];
}

const EVENTS_TABLE = '--events-table (PROJECTION_RUNNER_EVENTS_TABLE)';
const columnSetting = (flag: string) => `--column-${flag} (PROJECTION_RUNNER_COLUMN_${flag.toUpperCase().replaceAll('-', '_')})`;

function sourceSettings(options: StoreNamesOptions, schema: string): SourceSettings {
  const kind = options.source ?? 'native';
  if (!SOURCE_KINDS.includes(kind)) {
    throw new ConfigError('--source (PROJECTION_RUNNER_SOURCE)', `must be one of ${SOURCE_KINDS.join(', ')} (got ${JSON.stringify(kind)})`);
  }
  const column = (flag: string, value: string | undefined, fallback: string) => validateIdentifier(columnSetting(flag), value ?? fallback);
  const metadata = options.columnMetadata ?? DEFAULT_COLUMNS.metadata!;
  const columns: SourceColumns = {
    position: column('position', options.columnPosition, DEFAULT_COLUMNS.position),
    stream: column('stream', options.columnStream, DEFAULT_COLUMNS.stream),
    streamPosition: column('stream-position', options.columnStreamPosition, DEFAULT_COLUMNS.streamPosition),
    type: column('type', options.columnType, DEFAULT_COLUMNS.type),
    data: column('data', options.columnData, DEFAULT_COLUMNS.data),
    metadata: metadata === 'none' ? null : column('metadata', metadata, metadata),
    recordedAt: column('recorded-at', options.columnRecordedAt, DEFAULT_COLUMNS.recordedAt),
  };
  const notifyTrigger = options.noNotifyTrigger !== true;
  if (kind === 'native') {
    const table = validateIdentifier('table', options.table ?? 'events');
    // Its derived names (<table>_migrations, <table>_global_position_seq) must stay apart once cut to 63 bytes.
    if (table.length > MAX_NATIVE_TABLE_LENGTH) {
      throw new ConfigError(
        '--table (PROJECTION_RUNNER_TABLE)',
        `"${table}" has ${table.length} characters, at most ${MAX_NATIVE_TABLE_LENGTH}: the names derived from it would meet`,
      );
    }
    return { kind, schema, table, columns, notifyTrigger };
  }
  let where: [string, string];
  if (options.eventsTable !== undefined) where = parseQualifiedTable(EVENTS_TABLE, options.eventsTable);
  else if (kind === 'custom') throw new ConfigError(EVENTS_TABLE, '--source custom needs the table: --events-table schema.table');
  else where = FOREIGN_DEFAULT_TABLES[kind];
  return { kind, schema: where[0], table: where[1], columns, notifyTrigger };
}
