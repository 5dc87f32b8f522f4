import type { Event } from '@event-driven-io/emmett';
import { getPostgreSQLEventStore, type PostgresEventStore } from '@event-driven-io/emmett-postgresql';

/**
 * The real Emmett PostgreSQL event store (npm `@event-driven-io/emmett-postgresql`, pinned 0.42.0, with
 * `@event-driven-io/emmett` 0.42.0, `@event-driven-io/pongo` 0.16.11 and `@event-driven-io/dumbo` 0.12.7).
 *
 * `getPostgreSQLEventStore(connectionString)` opens a dumbo pool; the schema (emt_streams, emt_messages,
 * emt_processors, emt_projections, all PARTITION BY LIST (partition), their 'emt:default' partitions, the
 * emt_global_message_position sequence, the emt_* functions and dumbo's dmb_migrations table) is created on the
 * first call that needs it (appendToStream, readStream, …), in one transaction under dumbo's migration advisory
 * lock (999956789), so concurrent stores in several processes are safe.
 * An append is one call of emt_append_to_stream(): it takes pg_current_xact_id() first (stored in every row's
 * transaction_id xid8), then moves emt_streams' stream_position (the row lock of that UPDATE, or the primary key of
 * the INSERT for a new stream, serialises writers of one stream; a lost race is ExpectedVersionConflictError), then
 * inserts the messages, whose global_position comes from the column default nextval('emt_global_message_position'):
 * positions of one append increase but are not necessarily consecutive.
 *
 * emt_messages (checked by test/integration/sources/emmett-harness.test.ts): PARTITION BY LIST (partition) →
 * emt_messages_emt_default (LIST (is_archived)) → emt_messages_emt_default_active / _archived. global_position
 * bigint is NULLABLE and has NO index (the only index is the primary key (stream_id, stream_position, partition,
 * is_archived)); its sequence is a plain CREATE SEQUENCE (CACHE 1, not OWNED BY: pg_get_serial_sequence is NULL).
 *
 * Side effect: opening a store (dumbo's pool) sets process-wide type parsers on the shared `pg` module: int8 →
 * BigInt, json/jsonb → dumbo's JSON serializer. Every other pool of the same process (the test's, an in-process
 * runner's) then gets BigInt for bigint columns: cast to text in SQL where a string is expected.
 */

export type EmmettEvent = Event<string, Record<string, unknown>>;

/** An Emmett event store on `url` (schema created lazily, on the first append). Close it with `store.close()`. */
export function openEmmettStore(url: string): PostgresEventStore {
  return getPostgreSQLEventStore(url);
}

export interface EmmettAppendResult {
  nextExpectedStreamVersion: bigint;
  lastEventGlobalPosition: bigint;
  createdNewStream: boolean;
}

/** `eventStore.appendToStream(stream, events)`: no expected version (appends whatever the stream's state). */
export async function appendEmmett(
  store: PostgresEventStore,
  stream: string,
  events: Array<{ type: string; data: Record<string, unknown>; metadata?: Record<string, unknown> }>,
): Promise<EmmettAppendResult> {
  const result = await store.appendToStream<EmmettEvent>(stream, events as EmmettEvent[]);
  return {
    nextExpectedStreamVersion: result.nextExpectedStreamVersion,
    lastEventGlobalPosition: result.lastEventGlobalPosition,
    createdNewStream: result.createdNewStream,
  };
}
