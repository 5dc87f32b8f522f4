import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError, EventStore, type EventStoreOptions } from '../../../src/index.js';
import { storeNames } from '../../../src/db/identifiers.js';
import { createTestDatabase, type TestDatabase } from '../../support/database.js';
import { LEDGER_SOURCE } from '../../support/foreign/custom-ledger.js';

/**
 * EventStore writes the runner's native table through events_append. Given a foreign source's options (those of a
 * runner with --source), it must refuse at once: it would call an `<table>_append` the store does not have, or, worse,
 * the native table's own function when that table shares the foreign one's name, appending to the wrong store.
 */
let db: TestDatabase;
beforeAll(async () => {
  // A migrated database: the native public.events and public.events_append exist; app.events is another store's.
  db = await createTestDatabase();
  await db.pool.query(`CREATE SCHEMA app; CREATE TABLE app.events (LIKE public.events INCLUDING ALL)`);
});
afterAll(() => db.drop());

const counts = async () => {
  const { rows } = await db.pool.query(
    `SELECT (SELECT count(*)::int FROM public.events) AS native, (SELECT count(*)::int FROM app.events) AS foreign`,
  );
  return rows[0] as { native: number; foreign: number };
};

describe('EventStore on a foreign source', () => {
  it.each<[string, Record<string, unknown>, RegExp]>([
    [
      'message-db',
      { source: 'message-db' },
      /^invalid EventStoreOptions\.source: EventStore appends to the runner's native events table only, not to the message-db store: write it with message-db's own message_store\.write_message; the runner reads it with --source message-db$/,
    ],
    [
      'emmett',
      { source: 'emmett' },
      /^invalid EventStoreOptions\.source: .* not to the emmett store: write it with Emmett's own appendToStream/,
    ],
    [
      'custom',
      { ...LEDGER_SOURCE },
      /^invalid EventStoreOptions\.source: .* not to the custom store: write it with the application's own INSERTs/,
    ],
    [
      'a foreign table without --source',
      { eventsTable: 'app.events' },
      /^invalid EventStoreOptions\.eventsTable: eventsTable describes a foreign source's table; EventStore appends to the runner's native events table only/,
    ],
    [
      'column settings',
      { columnPosition: 'id', noNotifyTrigger: true },
      /^invalid EventStoreOptions\.columnPosition: columnPosition, noNotifyTrigger describe a foreign source's table/,
    ],
  ])('%s: a ConfigError at construction', (_, options, message) => {
    const build = () => new EventStore(db.pool, options as EventStoreOptions);
    expect(build).toThrow(ConfigError);
    expect(build).toThrow(message);
  });

  it('a custom source whose table is also called "events": refused, where the native events_append would have written to public.events', async () => {
    const options = { source: 'custom', eventsTable: 'app.events' } as const;
    // What the writer would have called: the native table's function, which inserts into public.events.
    expect(storeNames(options).q.appendFunction).toBe('"public"."events_append"');
    expect(() => new EventStore(db.pool, options as unknown as EventStoreOptions)).toThrow(ConfigError);
    expect(await counts()).toEqual({ native: 0, foreign: 0 });

    // The native writer, named explicitly or by default, still writes its own table.
    await new EventStore(db.pool, { source: 'native' }).append('s-1', [{ type: 'E', data: {} }]);
    await new EventStore(db.pool).append('s-2', [{ type: 'E', data: {} }]);
    expect(await counts()).toEqual({ native: 2, foreign: 0 });
  });
});
