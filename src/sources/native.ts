import type pg from 'pg';
import type { StoreNames } from '../db/identifiers.js';
import { EVENT_COLUMNS, toStoredEvent, type EventRow, type StoredEvent } from '../store/types.js';

/**
 * The reads of the event table the runner's own migrations create (the native source): a batch in global order,
 * events at given positions, and the age of the oldest event after a checkpoint. Every statement here that names
 * the events table is what an adapter for another table provides.
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
  const { rows } = await tx.query<EventRow & { over: boolean }>({
    // Named: parsed and planned once per connection, it is the hot query of every replay.
    name: eventTypes ? `pr_read_typed_${names.schema}_${names.table}` : `pr_read_${names.schema}_${names.table}`,
    // The outer list is the event columns and one boolean: every extra column is parsed for every row of a replay.
    text: `SELECT w.gp, w.stream_name, w.sp, w.type, w.data, w.metadata, w.recorded_at, w.run_bytes >= $4 AS over FROM (
             SELECT ${EVENT_COLUMNS}, global_position AS pos,
                    pg_column_size(data) + pg_column_size(metadata) AS size_bytes,
                    sum(pg_column_size(data) + pg_column_size(metadata)) OVER (ORDER BY global_position) AS run_bytes
               FROM ${names.q.events}
              WHERE global_position > $1 AND global_position <= $2 ${eventTypes ? 'AND type = ANY($5)' : ''}
              ORDER BY global_position LIMIT $3
           ) w
           WHERE w.run_bytes - w.size_bytes < $4
           ORDER BY w.pos`,
    values: [after.toString(), upTo.toString(), limit, maxBytes, ...(eventTypes ? [eventTypes] : [])],
  });
  const last = rows.at(-1);
  return { events: rows.map(toStoredEvent), truncated: last?.over === true };
}

/** The events at these positions (late deliveries), in global order. */
export async function readEventsAt(tx: pg.ClientBase, names: StoreNames, positions: bigint[]): Promise<StoredEvent[]> {
  const { rows } = await tx.query<EventRow>(
    `SELECT ${EVENT_COLUMNS} FROM ${names.q.events} WHERE global_position = ANY($1::bigint[]) ORDER BY global_position`,
    [positions.map(String)],
  );
  return rows.map(toStoredEvent);
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
  const { rows } = await db.query<{ name: string; age: number | null }>(
    `SELECT p.name,
            (SELECT extract(epoch FROM now() - e.recorded_at)::float8 FROM ${names.q.events} e
              WHERE e.global_position > p.cp ORDER BY e.global_position LIMIT 1) AS age
       FROM unnest($1::text[], $2::bigint[]) AS p(name, cp)`,
    [checkpoints.map((p) => p.name), checkpoints.map((p) => p.checkpoint.toString())],
  );
  return new Map(rows.map((r) => [r.name, r.age]));
}
