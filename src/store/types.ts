import type { StoredEvent } from '../events.js';

// The event types are the floor every room stands on (errors.ts names StoredEvent): declared in src/events.ts.
export type { NewEvent, StoredEvent } from '../events.js';

export interface AppendResult {
  firstPosition: bigint;
  lastPosition: bigint;
  streamVersion: bigint;
}

/** Row shape shared by every query that reads events; `toStoredEvent` is its only reader. */
export const EVENT_COLUMNS = 'global_position::text AS gp, stream_name, stream_position::text AS sp, type, data, metadata, recorded_at';

export interface EventRow {
  gp: string;
  stream_name: string;
  sp: string;
  type: string;
  data: unknown;
  metadata: Record<string, unknown>;
  recorded_at: Date;
}

export function toStoredEvent(row: EventRow): StoredEvent {
  return {
    globalPosition: BigInt(row.gp),
    streamName: row.stream_name,
    streamPosition: BigInt(row.sp),
    type: row.type,
    data: row.data,
    metadata: row.metadata,
    recordedAt: row.recorded_at,
  };
}
