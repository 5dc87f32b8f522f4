import type { SourceKind, StoreNames } from '../db/identifiers.js';

/**
 * What a source's description is made of, and the builders every source uses: the sources (message-db.ts,
 * emmett.ts, custom.ts) and event-table.ts, which picks one of them, import this file; it imports none of them.
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

/** The setting that chose the source: the one a ConfigError names for a column it did not configure. */
export const SOURCE_SETTING = '--source (PROJECTION_RUNNER_SOURCE)';

/** The setting that names a foreign source's table. */
export const EVENTS_TABLE_SETTING = '--events-table (PROJECTION_RUNNER_EVENTS_TABLE)';

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
