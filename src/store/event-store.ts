import type pg from 'pg';
import { ConfigError, WrongExpectedVersionError } from '../errors.js';
import { migrate } from '../db/migrate.js';
import { storeNames, type SourceKind, type StoreNames, type StoreNamesOptions } from '../db/identifiers.js';
import { validateAppend } from './validate-append.js';
import { EVENT_COLUMNS, toStoredEvent, type AppendResult, type EventRow, type NewEvent, type StoredEvent } from './types.js';

/**
 * Where the native events table is. Only the native source: the writer appends through events_append, which migrate
 * creates for the runner's own table and for no other store's (see FOREIGN_ONLY_OPTIONS).
 */
export type EventStoreOptions = Pick<StoreNamesOptions, 'schema' | 'table' | 'channel'> & { source?: 'native' };

/**
 * Options that name or describe a foreign source's table: they mean nothing to the native writer. Every option of
 * StoreNamesOptions but the native ones (the compiler checks that none is forgotten when one is added).
 */
const FOREIGN_ONLY: Record<Exclude<keyof StoreNamesOptions, 'schema' | 'table' | 'channel' | 'source'>, true> = {
  eventsTable: true,
  columnPosition: true,
  columnStream: true,
  columnStreamPosition: true,
  columnType: true,
  columnData: true,
  columnMetadata: true,
  columnRecordedAt: true,
  noNotifyTrigger: true,
};
const FOREIGN_ONLY_OPTIONS = Object.keys(FOREIGN_ONLY) as Array<keyof typeof FOREIGN_ONLY>;

/** How each foreign store is written instead. */
const FOREIGN_WRITERS: Record<Exclude<SourceKind, 'native'>, string> = {
  'message-db': "message-db's own message_store.write_message",
  emmett: "Emmett's own appendToStream",
  custom: "the application's own INSERTs",
};

/**
 * EventStore writes the runner's own table only. Pointed at another store (the options a runner with `--source`
 * takes), it would call an `<table>_append` function that store does not have, or — when a native table of that name
 * exists in the schema — append to the native table instead of the store it names, and read it with columns it does
 * not have: refused here, before anything is built or written.
 */
function refuseForeignSource(options: EventStoreOptions): void {
  const given = options as StoreNamesOptions;
  const source = given.source ?? 'native';
  if (source !== 'native') {
    throw new ConfigError(
      'EventStoreOptions.source',
      `EventStore appends to the runner's native events table only, not to the ${String(source)} store: write it with ${FOREIGN_WRITERS[source as keyof typeof FOREIGN_WRITERS] ?? 'its own writer'}; the runner reads it with --source ${String(source)}`,
    );
  }
  const foreign = FOREIGN_ONLY_OPTIONS.filter((key) => given[key] !== undefined);
  if (foreign.length > 0) {
    throw new ConfigError(
      `EventStoreOptions.${foreign[0]}`,
      `${foreign.join(', ')} describe${foreign.length === 1 ? 's' : ''} a foreign source's table; EventStore appends to the runner's native events table only (schema, table, channel)`,
    );
  }
}

export interface AppendOptions {
  /** The stream's current number of events; 0 means the stream must not exist yet. */
  expectedVersion?: bigint | number;
  /** Append inside this client's open transaction; the caller commits or rolls back. */
  client?: pg.ClientBase;
}

/**
 * The writer. All the concurrency work (per-stream lock, consecutive positions, version check, NOTIFY) happens in
 * one database function call (see migrations), so an append is one round trip and behaves the same inside a
 * caller's transaction as on its own.
 */
export class EventStore {
  readonly names: StoreNames;

  constructor(
    private readonly pool: pg.Pool,
    options: EventStoreOptions = {},
  ) {
    refuseForeignSource(options);
    this.names = storeNames(options);
  }

  /** Creates or upgrades the schema; safe to call from several processes at once. */
  migrate(): Promise<number[]> {
    return migrate(this.pool, this.names);
  }

  async append(streamName: string, events: NewEvent[], options: AppendOptions = {}): Promise<AppendResult> {
    const batch = validateAppend(streamName, events, options.expectedVersion);
    const expected = options.expectedVersion === undefined ? null : BigInt(options.expectedVersion);
    const runner = options.client ?? this.pool;
    const { rows } = await runner.query<{ first: string | null; last: string | null; version: string | null; actual: string }>(
      `SELECT first_position::text AS first, last_position::text AS last, stream_version::text AS version,
              actual_version::text AS actual
         FROM ${this.names.q.appendFunction}($1, $2::text[], $3::jsonb[], $4::jsonb[], $5::bigint, $6)`,
      [streamName, batch.types, batch.data, batch.metadata, expected?.toString() ?? null, this.names.channel],
    );
    const row = rows[0]!;
    if (row.first === null) {
      throw new WrongExpectedVersionError(streamName, expected!, BigInt(row.actual));
    }
    return { firstPosition: BigInt(row.first), lastPosition: BigInt(row.last!), streamVersion: BigInt(row.version!) };
  }

  /** Committed events after `after`, in global order. Note: this reads past gaps; projections use the runner. */
  async readAll({ after = 0n, limit = 1000 }: { after?: bigint | number; limit?: number } = {}): Promise<StoredEvent[]> {
    const { rows } = await this.pool.query<EventRow>(
      `SELECT ${EVENT_COLUMNS} FROM ${this.names.q.events}
        WHERE global_position > $1 ORDER BY global_position LIMIT $2`,
      [String(after), limit],
    );
    return rows.map(toStoredEvent);
  }

  async readStream(streamName: string, { fromVersion = 1n }: { fromVersion?: bigint | number } = {}): Promise<StoredEvent[]> {
    const { rows } = await this.pool.query<EventRow>(
      `SELECT ${EVENT_COLUMNS} FROM ${this.names.q.events}
        WHERE stream_name = $1 AND stream_position >= $2 ORDER BY stream_position`,
      [streamName, String(fromVersion)],
    );
    return rows.map(toStoredEvent);
  }
}
