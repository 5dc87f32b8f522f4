import type pg from 'pg';
import { WrongExpectedVersionError } from '../errors.js';
import { migrate } from '../db/migrate.js';
import { storeNames, type StoreNames, type StoreNamesOptions } from '../db/identifiers.js';
import { validateAppend } from './validate-append.js';
import { EVENT_COLUMNS, toStoredEvent, type AppendResult, type EventRow, type NewEvent, type StoredEvent } from './types.js';

export type EventStoreOptions = StoreNamesOptions;

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
