import { createHash } from 'node:crypto';
import { DEFAULT_COLUMNS, fitIdentifier, quoteIdentifier, type StoreNames } from '../db/identifiers.js';
import { customTable } from './custom.js';
import { namedColumns, SOURCE_SETTING, type EventField, type EventTable } from './description.js';
import { emmettTable } from './emmett.js';
import { messageDbTable } from './message-db.js';

/**
 * A source: the description of an events table (description.ts) from which every statement that reads events is
 * built (the batch reads, the late deliveries, the lag, the tracker's observation and audit, status, the replay
 * target). One module per source gives its description (native below, message-db.ts, emmett.ts, custom.ts); nothing
 * else in the runner names another store's columns.
 */

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
 * recorded_at; read by position in this order by read-only-event.ts). Numbers as text: whatever type parsers the process has (Emmett's client
 * sets BigInt ones process-wide), the runner gets what it expects.
 */
export function eventColumnsSql(t: EventTable, alias: string): string {
  const field = (f: Exclude<EventField, 'metadata'>) => {
    const c = columnSql(t, f, alias);
    return t.columns[f].read ? t.columns[f].read(c) : c;
  };
  // As stored, json or jsonb, parsed by the client: never cast to jsonb, which refuses the escape \u0000 that a json
  // column may hold (22P05) and so failed the whole page, for every projection, for ever.
  const metadata = t.columns.metadata ? `coalesce(${alias}.${quoteIdentifier(t.columns.metadata.name)}, '{}')` : `'{}'::jsonb`;
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
