export interface NewEvent {
  type: string;
  data: unknown;
  metadata?: Record<string, unknown>;
}

export interface StoredEvent {
  globalPosition: bigint;
  streamName: string;
  streamPosition: bigint;
  type: string;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- each handler reads the shape of its own event types
  data: any;
  metadata: Record<string, unknown>;
  recordedAt: Date;
  /** Set on an event that committed after its gap had been declared dead, delivered out of global order. */
  late?: boolean;
}

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
