import type pg from 'pg';
import type { Logger } from 'pino';
import { createPool, describeConnection } from '../db/connection.js';
import { startEmbeddedDatabase } from '../db/embedded.js';
import { DatabaseUnavailableError } from '../errors.js';

export interface OpenDatabase {
  connectionString: string;
  embedded: boolean;
  close(): Promise<void>;
}

/**
 * A command's logger, or the function that makes it: only the embedded database logs here, so a command that gives
 * a function creates no logger (and loads no pino) when DATABASE_URL is set.
 */
export type CommandLog = Logger | (() => Logger);

/** DATABASE_URL when given, else the embedded PostgreSQL under .data/ (said so in the log). */
export async function openDatabase(databaseUrl: string | undefined, commandLog: CommandLog): Promise<OpenDatabase> {
  if (databaseUrl) return { connectionString: databaseUrl, embedded: false, close: async () => {} };
  const log = typeof commandLog === 'function' ? commandLog() : commandLog;
  let embedded;
  try {
    embedded = await startEmbeddedDatabase(undefined, (m) => log.warn(m));
  } catch (error) {
    // The production image leaves the embedded binaries out on purpose.
    throw new DatabaseUnavailableError(
      `no DATABASE_URL is set and the embedded PostgreSQL cannot start (${(error as Error).message.split('\n')[0]}): set DATABASE_URL`,
      { cause: error },
    );
  }
  log.info(
    { database: describeConnection(embedded.connectionString), binaries: embedded.binaries, started: embedded.owned },
    'no DATABASE_URL: using the embedded PostgreSQL under .data/',
  );
  return {
    connectionString: embedded.connectionString,
    embedded: true,
    close: async () => {
      await embedded.stop();
      if (embedded.owned) log.info('embedded PostgreSQL stopped');
    },
  };
}

export function isAuthenticationFailure(error: unknown): boolean {
  const code = (error as { code?: string })?.code;
  return code === '28P01' || code === '28000';
}

/**
 * The pool's first connection, translated into a clear error for the commands that do not wait for the database. It
 * goes back to the pool idle, so the command's first statement runs on it: one connection per command, not two.
 */
export async function checkConnection(pool: pg.Pool, connectionString: string): Promise<void> {
  const where = describeConnection(connectionString);
  try {
    (await pool.connect()).release();
  } catch (error) {
    if (isAuthenticationFailure(error)) {
      throw new DatabaseUnavailableError(`authentication failed for PostgreSQL at ${where}: check the user and password`);
    }
    const reason = (error as { code?: string }).code ?? (error as Error).message;
    throw new DatabaseUnavailableError(`cannot reach PostgreSQL at ${where} (${reason})`);
  }
}

/**
 * The shape of every command but `run` and `demo`: open the database, check it answers, run `fn` with a small pool,
 * and close everything whatever happens (what `fn` started, it stops in its own finally, before the pool ends).
 */
export async function withDatabasePool<T>(
  databaseUrl: string | undefined,
  role: string,
  log: CommandLog,
  fn: (pool: pg.Pool, connectionString: string) => Promise<T>,
  size = 1,
): Promise<T> {
  const database = await openDatabase(databaseUrl, log);
  try {
    const pool = createPool(database.connectionString, role, size);
    try {
      await checkConnection(pool, database.connectionString);
      return await fn(pool, database.connectionString);
    } finally {
      await pool.end();
    }
  } finally {
    await database.close();
  }
}
