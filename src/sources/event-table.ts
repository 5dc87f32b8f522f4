import { createHash } from 'node:crypto';
import { DEFAULT_COLUMNS, fitIdentifier, quoteIdentifier, type SourceKind, type StoreNames } from '../db/identifiers.js';
import { customTable } from './custom.js';
import { emmettTable } from './emmett.js';
import { messageDbTable } from './message-db.js';

/**
 * A source: the description of an events table from which every statement that reads events is built (the batch
 * reads, the late deliveries, the lag, the tracker's observation and audit, status, the replay target). One module
 * per source gives its description (native below, message-db.ts, emmett.ts, custom.ts); nothing else in the runner
 * names another store's columns.
 */

/** The fields of the event handlers receive (store/types.ts StoredEvent), each read from one column. */
export type EventField = 'position' | 'stream' | 'streamPosition' | 'type' | 'data' | 'metadata' | 'recordedAt';

/** The PostgreSQL types (as regtype prints them) each field accepts. */
export const FIELD_TYPES: Record<EventField, readonly string[]> = {
  position: ['bigint', 'integer', 'smallint'],
  stream: ['text', 'character varying', 'character', 'uuid'],
  streamPosition: ['bigint', 'integer', 'smallint'],
  type: ['text', 'character varying', 'character'],
  data: ['jsonb', 'json'],
  metadata: ['jsonb', 'json'],
  recordedAt: ['timestamp with time zone'],
};

export interface SourceColumn {
  /** The column's name (plain, quoted where used). */
  name: string;
  /** The types accepted; default FIELD_TYPES of the field. */
  types?: readonly string[];
  /** The column's value → the field's value (`c` is the qualified column). Default: as is. */
  read?: (c: string) => string;
}

export interface EventTable {
  kind: SourceKind;
  /** The runner's own table (created by migrate), or another store's. */
  native: boolean;
  schema: string;
  name: string;
  /** Quoted and qualified. */
  table: string;
  /** The setting that names a column or the table, for ConfigError: a custom column's own flag, else `--source`. */
  settingOf: (field: EventField | 'table') => string;
  /** metadata null: the table has none, handlers get {}. */
  columns: Record<Exclude<EventField, 'metadata'>, SourceColumn> & { metadata: SourceColumn | null };
  /**
   * Rows that are not events handed to projections (Emmett's archived streams). Only the reads delivered to
   * projections apply it: the high-water tracker sees every position, or the rows left out would be gaps.
   */
  filter?: (alias: string) => string;
  /** What migrate may add for reading: an index on the position column when none leads with it. */
  indexPosition: boolean;
  /** The NOTIFY trigger's name on the table and its function (in the runner's schema); undefined for native. */
  trigger?: { name: string; functionQualified: string };
}

const SOURCE_SETTING = '--source (PROJECTION_RUNNER_SOURCE)';

/** The runner's own table: migration 1's columns, read as they are. */
function nativeTable(names: StoreNames): EventTable {
  return {
    kind: 'native',
    native: true,
    schema: names.source.schema,
    name: names.source.table,
    table: names.q.events,
    settingOf: (field) => (field === 'table' ? '--table (PROJECTION_RUNNER_TABLE)' : SOURCE_SETTING),
    columns: namedColumns({ ...DEFAULT_COLUMNS, metadata: DEFAULT_COLUMNS.metadata! }),
    indexPosition: false,
  };
}

/** Columns named `names[field]`, each read as it is. */
export function namedColumns(names: Record<EventField, string>): EventTable['columns'] {
  const column = (field: EventField) => ({ name: names[field] });
  return {
    position: column('position'),
    stream: column('stream'),
    streamPosition: column('streamPosition'),
    type: column('type'),
    data: column('data'),
    metadata: column('metadata'),
    recordedAt: column('recordedAt'),
  };
}

/**
 * A foreign store's table (message-db, Emmett, custom): the configured table, `columns`, an index on the position
 * column when none leads with it, and the settings that name them in a ConfigError.
 */
export function foreignTable(
  names: StoreNames,
  kind: Exclude<SourceKind, 'native'>,
  columns: EventTable['columns'],
  options: { filter?: EventTable['filter']; settingOf?: EventTable['settingOf'] } = {},
): Omit<EventTable, 'trigger'> {
  return {
    kind,
    native: false,
    schema: names.source.schema,
    name: names.source.table,
    table: names.q.events,
    settingOf: options.settingOf ?? ((field) => (field === 'table' ? EVENTS_TABLE_SETTING : SOURCE_SETTING)),
    columns,
    ...(options.filter ? { filter: options.filter } : {}),
    indexPosition: true,
  };
}

const described = new WeakMap<StoreNames, EventTable>();

/** The description of the configured source (computed once per StoreNames). */
export function eventTable(names: StoreNames): EventTable {
  let table = described.get(names);
  if (!table) {
    table = build(names);
    described.set(names, table);
  }
  return table;
}

function build(names: StoreNames): EventTable {
  const withTrigger = (t: Omit<EventTable, 'trigger'>): EventTable => ({ ...t, trigger: foreignTrigger(names, t) });
  switch (names.source.kind) {
    case 'native':
      return nativeTable(names);
    case 'message-db':
      return withTrigger(messageDbTable(names));
    case 'emmett':
      return withTrigger(emmettTable(names));
    case 'custom':
      return withTrigger(customTable(names));
  }
}

/** The setting that names a foreign source's table, and the one that chose its columns. */
export const EVENTS_TABLE_SETTING = '--events-table (PROJECTION_RUNNER_EVENTS_TABLE)';
export { SOURCE_SETTING };

/**
 * The NOTIFY trigger of a foreign table: `projection_runner_notify_<channel>` on the table, one per channel. Its
 * function, in the runner's schema, is named after the channel and, by 8 hex digits of a hash, after the table and
 * position column its body reads: two tables attached in one schema with one channel must not share a function (the
 * second CREATE OR REPLACE would make the first table's INSERTs fail on a column it does not have). Both names are
 * fitted to PostgreSQL's 63 bytes (fitIdentifier): two long channels never end up sharing one trigger.
 */
export function foreignTrigger(names: StoreNames, t: Pick<EventTable, 'table' | 'columns'>): { name: string; functionQualified: string } {
  const name = fitIdentifier(`projection_runner_notify_${names.channel}`);
  const reads = createHash('sha256')
    .update(`${t.table}.${quoteIdentifier(t.columns.position.name)}`)
    .digest('hex')
    .slice(0, 8);
  const fn = fitIdentifier(`projection_runner_notify_${names.channel}_${reads}`);
  return { name, functionQualified: `${names.q.schema}.${quoteIdentifier(fn)}` };
}

/** `alias.column`, quoted. */
export function columnSql(t: EventTable, field: Exclude<EventField, 'metadata'>, alias: string): string {
  return `${alias}.${quoteIdentifier(t.columns[field].name)}`;
}

/** The position column, qualified by `alias`: ranges, ORDER BY, max(). */
export function positionSql(t: EventTable, alias: string): string {
  return columnSql(t, 'position', alias);
}

/**
 * The select list of an event row in the shape store/types.ts EventRow (gp, stream_name, sp, type, data, metadata,
 * recorded_at), which toStoredEvent reads. Numbers as text: whatever type parsers the process has (Emmett's client
 * sets BigInt ones process-wide), the runner gets what it expects.
 */
export function eventColumnsSql(t: EventTable, alias: string): string {
  const field = (f: Exclude<EventField, 'metadata'>) => {
    const c = columnSql(t, f, alias);
    return t.columns[f].read ? t.columns[f].read(c) : c;
  };
  const metadata = t.columns.metadata
    ? `coalesce((${alias}.${quoteIdentifier(t.columns.metadata.name)})::jsonb, '{}'::jsonb)`
    : `'{}'::jsonb`;
  return [
    `(${field('position')})::text AS gp`,
    `(${field('stream')})::text AS stream_name`,
    `(${field('streamPosition')})::text AS sp`,
    `(${field('type')})::text AS type`,
    `${field('data')} AS data`,
    `${metadata} AS metadata`,
    `${field('recordedAt')} AS recorded_at`,
  ].join(', ');
}

/** The stored bytes of an event's data and metadata (the --batch-bytes bound). */
export function eventSizeSql(t: EventTable, alias: string): string {
  const size = (name: string) => `coalesce(pg_column_size(${alias}.${quoteIdentifier(name)}), 0)`;
  return t.columns.metadata ? `(${size(t.columns.data.name)} + ${size(t.columns.metadata.name)})` : size(t.columns.data.name);
}

/** `AND <the source's filter>` for reads delivered to projections, or ''. */
export function deliveredFilterSql(t: EventTable, alias: string): string {
  return t.filter ? `AND (${t.filter(alias)})` : '';
}

/** The recorded-at value as timestamptz (lag, status). */
export function recordedAtSql(t: EventTable, alias: string): string {
  const c = columnSql(t, 'recordedAt', alias);
  return t.columns.recordedAt.read ? t.columns.recordedAt.read(c) : c;
}
