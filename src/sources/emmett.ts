import type { StoreNames } from '../db/identifiers.js';
import { foreignTable, namedColumns, type EventTable } from './description.js';

/**
 * Emmett's PostgreSQL event store (@event-driven-io/emmett-postgresql 0.42): `emt_messages`, LIST-partitioned by
 * `partition` (then by `is_archived`), written by `appendToStream` (the emt_append_to_stream function).
 *
 * - globalPosition ← global_position (default nextval('emt_global_message_position'), a plain CACHE 1 sequence not
 *   owned by the column: found from the default). The column is nullable; a NULL position is never read.
 * - streamPosition ← stream_position, as is (Emmett's streams start at 1, like the native source's).
 * - streamName ← stream_id; type ← message_type; data ← message_data; metadata ← message_metadata; recordedAt ←
 *   created (timestamptz).
 * - Every partition (tenant) is read: one sequence numbers them all, so a position of another partition left out
 *   would be a gap. Archived streams' messages (is_archived) are not delivered, as Emmett's own readers skip them;
 *   the tracker still sees their positions.
 * - 0.42 has no index on global_position: migrate builds one (per partition, concurrently; see prepare.ts).
 */
export function emmettTable(names: StoreNames): Omit<EventTable, 'trigger'> {
  const columns = namedColumns({
    position: 'global_position',
    stream: 'stream_id',
    streamPosition: 'stream_position',
    type: 'message_type',
    data: 'message_data',
    metadata: 'message_metadata',
    recordedAt: 'created',
  });
  return foreignTable(names, 'emmett', columns, { filter: (alias) => `${alias}."is_archived" = false` });
}
