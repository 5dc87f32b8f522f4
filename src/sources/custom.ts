import type { StoreNames } from '../db/identifiers.js';
import { EVENTS_TABLE_SETTING, foreignTable, namedColumns, type EventField, type EventTable } from './description.js';

const FLAGS: Record<EventField, string> = {
  position: 'column-position',
  stream: 'column-stream',
  streamPosition: 'column-stream-position',
  type: 'column-type',
  data: 'column-data',
  metadata: 'column-metadata',
  recordedAt: 'column-recorded-at',
};

/**
 * Any table, one column per field named by its setting (`--column-position`, …): positions from a sequence or an
 * identity column (found in the catalog), written by anyone (plain INSERTs, COPY, an ORM). Every field is read as
 * is: streamPosition is whatever the table stores (start it at 1 to match the native source).
 */
export function customTable(names: StoreNames): Omit<EventTable, 'trigger'> {
  const { columns } = names.source;
  const named = namedColumns({ ...columns, metadata: columns.metadata ?? '' });
  return foreignTable(
    names,
    'custom',
    { ...named, metadata: columns.metadata === null ? null : named.metadata },
    {
      settingOf: (field) =>
        field === 'table'
          ? EVENTS_TABLE_SETTING
          : `--${FLAGS[field]} (PROJECTION_RUNNER_${FLAGS[field].toUpperCase().replaceAll('-', '_')})`,
    },
  );
}
