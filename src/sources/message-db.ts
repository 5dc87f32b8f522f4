import type { StoreNames } from '../db/identifiers.js';
import { foreignTable, namedColumns, type EventTable } from './description.js';

/**
 * Eventide's message-db (1.3): `message_store.messages` written by `message_store.write_message`.
 *
 * - globalPosition ← global_position (bigserial: its sequence is found by pg_get_serial_sequence, CACHE 1).
 * - streamPosition ← position, AS IS: 0-based, the first message of a stream is 0. It is the number message-db
 *   itself shows everywhere (write_message's result, get_stream_messages, expected_version): a projection ported
 *   from Eventide compares and stores the same numbers, and a reactor can pass it to write_message as the expected
 *   version. (The native source's streams start at 1; a handler shared by both must not assume either.)
 * - recordedAt ← time, a timestamp WITHOUT time zone holding UTC (message-db writes `now() AT TIME ZONE 'utc'`):
 *   read `AT TIME ZONE 'UTC'`, which makes it the right timestamptz whatever the session's TimeZone.
 * - metadata ← metadata, NULL (message-db's default) read as {}; data as is (jsonb).
 */
export function messageDbTable(names: StoreNames): Omit<EventTable, 'trigger'> {
  const columns = namedColumns({
    position: 'global_position',
    stream: 'stream_name',
    streamPosition: 'position',
    type: 'type',
    data: 'data',
    metadata: 'metadata',
    recordedAt: 'time',
  });
  const recordedAt = { name: 'time', types: ['timestamp without time zone'], read: (c: string) => `(${c} AT TIME ZONE 'UTC')` };
  return foreignTable(names, 'message-db', { ...columns, recordedAt });
}
