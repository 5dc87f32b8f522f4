import type pg from 'pg';
import type { StoreNames } from '../db/identifiers.js';
import type { StoredEvent } from '../store/types.js';
import { columnSql, deliveredFilterSql, eventColumnsSql, eventSizeSql, eventTable, positionSql, recordedAtSql } from './event-table.js';
import { DEFERRED_TYPES, readOnlyEvents, type EventTuple } from './read-only-event.js';

/**
 * The reads of the event table: a batch in global order, events at given positions, and the age of the oldest event
 * after a checkpoint. Built from the source's description (event-table.ts): the native table or another store's.
 */

/**
 * Events in (after, upTo], at most `limit` of them and at most about `maxBytes` of stored data (the first event is
 * always read, whatever its size). `truncated`: the byte bound cut the batch short, so there is more to read.
 * The byte count is pg_column_size: the stored size, TOAST-compressed for large values.
 */
export async function readEvents(
  tx: pg.ClientBase | pg.Pool,
  names: StoreNames,
  after: bigint,
  upTo: bigint,
  limit: number,
  eventTypes: string[] | undefined,
  maxBytes: number = Number.MAX_SAFE_INTEGER,
): Promise<{ events: StoredEvent[]; truncated: boolean }> {
  const t = eventTable(names);
  const position = positionSql(t, 'e');
  const size = eventSizeSql(t, 'e');
  const { rows, fields } = await tx.query<[...EventTuple, boolean]>({
    // Named: parsed and planned once per connection, it is the hot query of every replay.
    name: eventTypes ? `pr_read_typed_${names.schema}_${names.table}` : `pr_read_${names.schema}_${names.table}`,
    // Rows as arrays, data, metadata and recorded_at as text until a handler reads them (read-only-event.ts).
    rowMode: 'array',
    types: DEFERRED_TYPES,
    // The outer list is the event columns and one boolean: every extra column is parsed for every row of a replay.
    // The window's frame in ROWS (positions are unique, so it sums what RANGE does): RANGE compares every row with its
    // peers, a quarter of this statement's server time over a page of 5,000 events.
    text: `SELECT w.gp, w.stream_name, w.sp, w.type, w.data, w.metadata, w.recorded_at, w.run_bytes >= $4 AS over FROM (
             SELECT ${eventColumnsSql(t, 'e')}, ${position} AS pos,
                    ${size} AS size_bytes,
                    sum(${size}) OVER (ORDER BY ${position} ROWS UNBOUNDED PRECEDING) AS run_bytes
               FROM ${t.table} e
              WHERE ${position} > $1 AND ${position} <= $2 ${deliveredFilterSql(t, 'e')}
                    ${eventTypes ? `AND (${columnSql(t, 'type', 'e')})::text = ANY($5)` : ''}
              ORDER BY ${position} LIMIT $3
           ) w
           WHERE w.run_bytes - w.size_bytes < $4
           ORDER BY w.pos`,
    values: [after.toString(), upTo.toString(), limit, maxBytes, ...(eventTypes ? [eventTypes] : [])],
  });
  return { events: readOnlyEvents(rows, fields), truncated: rows.at(-1)?.[7] === true };
}

/** The events at these positions (late deliveries), in global order. */
export async function readEventsAt(tx: pg.ClientBase, names: StoreNames, positions: bigint[]): Promise<StoredEvent[]> {
  const t = eventTable(names);
  const position = positionSql(t, 'e');
  const { rows, fields } = await tx.query<EventTuple>({
    text: `SELECT ${eventColumnsSql(t, 'e')} FROM ${t.table} e
            WHERE ${position} = ANY($1::bigint[]) ${deliveredFilterSql(t, 'e')} ORDER BY ${position}`,
    values: [positions.map(String)],
    rowMode: 'array',
    types: DEFERRED_TYPES,
  });
  return readOnlyEvents(rows, fields);
}

/**
 * For each (projection, checkpoint): seconds since the first event after the checkpoint was recorded (null when
 * there is none). One statement whatever the number of projections: it runs on every scrape.
 */
export async function oldestUnappliedAges(
  db: pg.Pool | pg.ClientBase,
  names: StoreNames,
  checkpoints: Array<{ name: string; checkpoint: bigint }>,
): Promise<Map<string, number | null>> {
  const t = eventTable(names);
  const position = positionSql(t, 'e');
  const { rows } = await db.query<{ name: string; age: number | null }>(
    `SELECT p.name,
            (SELECT extract(epoch FROM now() - ${recordedAtSql(t, 'e')})::float8 FROM ${t.table} e
              WHERE ${position} > p.cp ${deliveredFilterSql(t, 'e')} ORDER BY ${position} LIMIT 1) AS age
       FROM unnest($1::text[], $2::bigint[]) AS p(name, cp)`,
    [checkpoints.map((p) => p.name), checkpoints.map((p) => p.checkpoint.toString())],
  );
  return new Map(rows.map((r) => [r.name, r.age]));
}
