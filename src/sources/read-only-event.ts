import pg from 'pg';
import type { StoredEvent } from '../store/types.js';

/**
 * An event as projections get it: read-only, on every path (a batch, the failure path, a late delivery). A page of
 * events is shared by the projections at its place (shared-reader.ts), one object per event for all of them, so a
 * handler that changed its event would change it for the others: the event is frozen, its data and metadata are
 * frozen deeply and its recordedAt is a ReadOnlyDate, so the write throws (a handler fault, said at once) instead of
 * silently reaching another read model.
 *
 * `data`, `metadata` and `recordedAt` stay the text PostgreSQL sent until a handler first reads them: a replay's
 * profile was a third parsing (JSON.parse, postgres-date's regular expression per row), freezing and collecting what
 * most handlers never read. They are own enumerable accessors (not a prototype's getters), so that everything that
 * copies an event (`{ ...event }`, JSON.stringify, a test's toEqual) still sees all seven fields; the value is
 * parsed, frozen and kept on first read, and every projection reading it afterwards gets that same object.
 */

/** Where each column is in a row read in rowMode 'array': event-table.ts eventColumnsSql's order. */
const Column = { Position: 0, Stream: 1, StreamPosition: 2, Type: 3, Data: 4, Metadata: 5, RecordedAt: 6 } as const;
type Column = (typeof Column)[keyof typeof Column];

/** A row as read with DEFERRED_TYPES: the columns above, data, metadata and recorded_at as PostgreSQL's text. */
export type EventTuple = [string, string, string, string, string | null, string | null, string | null, ...unknown[]];

const TYPE = pg.types.builtins;
/** The types whose text is parsed on first read: json and jsonb (data, metadata), timestamptz (recorded_at). */
const DEFERRED = new Set<number>([TYPE.JSON, TYPE.JSONB, TYPE.TIMESTAMPTZ]);
const keepText = (text: string) => text;

/** Type parsers for a read of events: the deferred types kept as text, every other type as the process parses it. */
export const DEFERRED_TYPES: pg.CustomTypesConfig = {
  getTypeParser: ((oid: number, format?: 'text' | 'binary') =>
    DEFERRED.has(oid) ? keepText : pg.types.getTypeParser(oid, format ?? 'text')) as pg.CustomTypesConfig['getTypeParser'],
};

/**
 * The parsers of one read's deferred columns: the process's own for each column's type (what the read would have
 * applied at once), looked up once per read, shared by its events.
 */
export interface DeferredParsers {
  data: (text: string) => unknown;
  metadata: (text: string) => unknown;
  recordedAt: (text: string) => unknown;
}

export function deferredParsers(fields: ReadonlyArray<{ dataTypeID: number }>): DeferredParsers {
  const parser = (column: Column) => pg.types.getTypeParser(fields[column]!.dataTypeID, 'text') as (text: string) => unknown;
  return { data: parser(Column.Data), metadata: parser(Column.Metadata), recordedAt: parser(Column.RecordedAt) };
}

/** The events of a read, in its order. */
export function readOnlyEvents(rows: EventTuple[], fields: ReadonlyArray<{ dataTypeID: number }>): StoredEvent[] {
  if (rows.length === 0) return [];
  const parsers = deferredParsers(fields);
  return rows.map((row) => new ReadOnlyEvent(row, parsers));
}

/** Which deferred fields hold their parsed value (`ReadOnlyEvent.#parsed`). */
const Parsed = { Data: 1, Metadata: 2, RecordedAt: 4 } as const;

class ReadOnlyEvent {
  readonly globalPosition: bigint;
  readonly streamName: string;
  readonly streamPosition: bigint;
  readonly type: string;
  // Own accessors, defined by the constructor (ACCESSORS): `declare` keeps the class from defining them as fields.
  declare readonly data: unknown;
  declare readonly metadata: Record<string, unknown>;
  declare readonly recordedAt: Date;
  // Private fields are not properties: freezing the event leaves them writable, for the parsed values. Each holds the
  // column's text until its first read, then the parsed value (a parsed value may be any JSON value, null and strings
  // included: `#parsed` says which are). The event keeps these three texts, not the row: the row's array and its
  // position texts die young instead of being held (and promoted) with every event of a page.
  #data: unknown;
  #metadata: unknown;
  #recordedAt: unknown;
  #parsed = 0;
  #parsers: DeferredParsers;

  // One descriptor object per field, shared by every event: three defineProperty calls cost a third of one
  // defineProperties with a map (which reads the map's descriptors again for every event).
  static readonly ACCESSORS = {
    data: {
      enumerable: true,
      get(this: ReadOnlyEvent) {
        if (!(this.#parsed & Parsed.Data)) {
          this.#data = deepFreeze(parseOrNull(this.#data as string | null, this.#parsers.data));
          this.#parsed |= Parsed.Data;
        }
        return this.#data;
      },
    },
    metadata: {
      enumerable: true,
      get(this: ReadOnlyEvent) {
        // The reads coalesce metadata to '{}' (event-table.ts eventColumnsSql); null only from a source that has none.
        if (!(this.#parsed & Parsed.Metadata)) {
          this.#metadata = deepFreeze(parseOrNull(this.#metadata as string | null, this.#parsers.metadata) ?? {});
          this.#parsed |= Parsed.Metadata;
        }
        return this.#metadata;
      },
    },
    recordedAt: {
      enumerable: true,
      get(this: ReadOnlyEvent) {
        if (!(this.#parsed & Parsed.RecordedAt)) {
          const parsed = parseOrNull(this.#recordedAt as string | null, this.#parsers.recordedAt) as Date;
          this.#recordedAt = new ReadOnlyDate(parsed.getTime());
          this.#parsed |= Parsed.RecordedAt;
        }
        return this.#recordedAt as Date;
      },
    },
  } satisfies Record<string, PropertyDescriptor>;

  constructor(row: EventTuple, parsers: DeferredParsers) {
    this.globalPosition = BigInt(row[Column.Position]);
    this.streamName = row[Column.Stream];
    this.streamPosition = BigInt(row[Column.StreamPosition]);
    this.type = row[Column.Type];
    this.#data = row[Column.Data];
    this.#metadata = row[Column.Metadata];
    this.#recordedAt = row[Column.RecordedAt];
    this.#parsers = parsers;
    Object.defineProperty(this, 'data', ReadOnlyEvent.ACCESSORS.data);
    Object.defineProperty(this, 'metadata', ReadOnlyEvent.ACCESSORS.metadata);
    Object.defineProperty(this, 'recordedAt', ReadOnlyEvent.ACCESSORS.recordedAt);
    Object.freeze(this);
  }
}

function parseOrNull(text: string | null, parse: (text: string) => unknown): unknown {
  return text === null ? null : parse(text);
}

/**
 * A Date whose setters throw: freezing cannot protect a Date (setTime() changes its internal slot through a frozen
 * object). Everything else is Date's: instanceof Date, getters, toISOString, a query parameter. A handler that needs
 * to change it takes a copy: `new Date(event.recordedAt)`.
 */
export class ReadOnlyDate extends Date {}
for (const name of Object.getOwnPropertyNames(Date.prototype).filter((n) => n.startsWith('set'))) {
  Object.defineProperty(ReadOnlyDate.prototype, name, {
    value() {
      throw new TypeError(
        `Cannot call ${name}() on an event's recordedAt: events are read-only (shared by the projections at one place); copy it with new Date(event.recordedAt)`,
      );
    },
  });
}

function deepFreeze<T>(value: T): T {
  if (value === null || typeof value !== 'object' || Object.isFrozen(value)) return value;
  Object.freeze(value);
  for (const child of Object.values(value)) deepFreeze(child);
  return value;
}
