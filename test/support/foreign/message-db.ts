import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import pg from 'pg';
import type { TestDatabase } from '../database.js';
import { ensureRole, libpqEnvironment, run } from './postgres-tools.js';
import { positionsIn, type ForeignStore } from './workload.js';

/**
 * The real Eventide message-db (npm `@eventide/message-db`, pinned 1.3.1), installed by its own `install.sh` into an
 * existing test database: role, schema, pgcrypto, the messages table, types, functions, indexes, views, privileges,
 * in exactly that order.
 *
 * Facts (1.3.1; the harness test checks them against the catalog):
 * - `message_store.messages`: global_position bigint (bigserial: sequence message_store.messages_global_position_seq,
 *   CACHE 1, primary key), position bigint (0-based stream position), time timestamp WITHOUT time zone (UTC),
 *   stream_name text, type text, data jsonb, metadata jsonb (nullable), id uuid (unique).
 * - `write_message` takes `pg_advisory_xact_lock(hash_64(category(stream_name)))`: writers of one CATEGORY (the
 *   stream name before the first '-') are serialised until commit, not only writers of one stream. The position
 *   comes from the column default (nextval) inside the INSERT, before the transaction has an xid unless it wrote
 *   earlier.
 * - Its functions name `messages`, `acquire_lock`, … unqualified: writer sessions need
 *   `search_path=message_store,public` (see messageDbClientConfig).
 */

const require = createRequire(import.meta.url);
export const MESSAGE_DB_DIR = path.join(path.dirname(require.resolve('@eventide/message-db/package.json')), 'database');
/** What the package's database/VERSION.txt says (1.3.1 on npm ships "1.3.0" there). */
export const MESSAGE_DB_SCHEMA_VERSION = readFileSync(path.join(MESSAGE_DB_DIR, 'VERSION.txt'), 'utf8').trim();

/**
 * Installs message-db into the (existing, empty of message_store) database of `databaseUrl` by running the
 * package's install.sh with CREATE_DATABASE=off, psql from the machine's PostgreSQL client tools, and the URL's
 * credentials as PG* variables. The role `message_store` is cluster-wide: created here first (race-safe), so that
 * install.sh's own `CREATE ROLE` finds it and only notices. Returns install.sh's output.
 */
export async function installMessageDb(databaseUrl: string): Promise<string> {
  await ensureRole(databaseUrl, 'message_store');
  const { env, database } = libpqEnvironment(databaseUrl);
  env.CREATE_DATABASE = 'off';
  env.DATABASE_NAME = database;
  return run('bash', [path.join(MESSAGE_DB_DIR, 'install.sh')], env, MESSAGE_DB_DIR);
}

/** A writer session's configuration: message-db's functions resolve their names through the search_path. */
export function messageDbClientConfig(databaseUrl: string): pg.ClientConfig {
  return { connectionString: databaseUrl, options: '-c search_path=message_store,public' };
}

/** A connected writer session (search_path set); the caller ends it. */
export async function connectMessageDb(databaseUrl: string): Promise<pg.Client> {
  const client = new pg.Client(messageDbClientConfig(databaseUrl));
  client.on('error', () => {});
  await client.connect();
  return client;
}

export interface MessageDbMessage {
  id?: string;
  streamName: string;
  type: string;
  data: unknown;
  metadata?: unknown;
  /** The stream's last position (0-based), -1 for a stream that must not exist yet; omitted: no check. */
  expectedVersion?: bigint | number;
}

/**
 * `message_store.write_message(id, stream_name, type, data, metadata, expected_version)`: returns the message's
 * stream position (0-based). A version mismatch raises 'Wrong expected version: …' (P0001). The session must have
 * `search_path=message_store,public` (connectMessageDb).
 */
export async function writeMessage(client: pg.ClientBase, message: MessageDbMessage): Promise<bigint> {
  const { rows } = await client.query<{ position: string }>(
    `SELECT message_store.write_message($1, $2, $3, $4::jsonb, $5::jsonb, $6::bigint)::text AS position`,
    [
      message.id ?? randomUUID(),
      message.streamName,
      message.type,
      JSON.stringify(message.data),
      message.metadata === undefined ? null : JSON.stringify(message.metadata),
      message.expectedVersion === undefined ? null : String(message.expectedVersion),
    ],
  );
  return BigInt(rows[0]!.position);
}

/**
 * message-db as the workload of a test (workload.ts): written with write_message on `--channel message_store`, the
 * global position of a message read back by its id in the writer's own transaction.
 */
export function messageDbStore(db: TestDatabase): ForeignStore {
  return {
    source: { source: 'message-db', channel: 'message_store' },
    connect: () => connectMessageDb(db.url),
    async write(client, stream, n) {
      const id = randomUUID();
      await writeMessage(client, { id, streamName: stream, type: 'Ticked', data: { n }, metadata: n % 2 ? { n } : undefined });
      const { rows } = await client.query<{ p: number }>('SELECT global_position::int AS p FROM message_store.messages WHERE id = $1', [
        id,
      ]);
      return rows[0]!.p;
    },
    committed: () => positionsIn(db.pool, 'message_store.messages', 'global_position'),
  };
}
