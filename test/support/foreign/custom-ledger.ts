import type pg from 'pg';
import type { RunnerOptions } from '../../../src/index.js';

/**
 * A home-made events table for `--source custom`: other column names than the native table's, an identity column for
 * the global position, a varchar stream, a json (not jsonb) metadata column, written by plain INSERTs.
 */
export const LEDGER_DDL = `
  CREATE SCHEMA app;
  CREATE TABLE app.ledger (
    id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    stream  varchar(200) NOT NULL,
    version int NOT NULL,
    kind    text NOT NULL,
    body    jsonb NOT NULL,
    meta    json,
    at      timestamptz NOT NULL DEFAULT now()
  )`;

/** The runner's settings for app.ledger: one per column. */
export const LEDGER_SOURCE = {
  source: 'custom',
  eventsTable: 'app.ledger',
  columnPosition: 'id',
  columnStream: 'stream',
  columnStreamPosition: 'version',
  columnType: 'kind',
  columnData: 'body',
  columnMetadata: 'meta',
  columnRecordedAt: 'at',
} as const satisfies Partial<RunnerOptions>;

/** One plain INSERT of an event (metadata on odd versions, NULL on even ones); returns its position. */
export async function insertLedger(db: pg.ClientBase | pg.Pool, stream: string, version: number, kind = 'Booked'): Promise<number> {
  const { rows } = await db.query<{ id: number }>(
    `INSERT INTO app.ledger (stream, version, kind, body, meta) VALUES ($1, $2, $3, $4, $5) RETURNING id::int AS id`,
    [stream, version, kind, JSON.stringify({ stream, version }), version % 2 ? JSON.stringify({ by: 'test' }) : null],
  );
  return rows[0]!.id;
}
