import type pg from 'pg';
import { expect } from 'vitest';
import { waitFor } from './database.js';
import { defineProjection, type Projection, type StoredEvent } from '../../src/index.js';

/**
 * A read model that records every delivery: position, how many times it was applied, whether it came late, and the
 * order of application. It is what "exactly once, in global order" is checked against.
 */
export function positionLog(name: string, options: { failAt?: (event: StoredEvent) => boolean } = {}): Projection {
  const table = `log_${name}`;
  return defineProjection({
    name,
    async setup(db) {
      await db.query(`CREATE TABLE IF NOT EXISTS ${table} (
        position bigint PRIMARY KEY, applied int NOT NULL, late boolean NOT NULL, seq bigserial)`);
    },
    async reset(db) {
      await db.query(`TRUNCATE ${table}`);
    },
    async handle(event, tx) {
      if (options.failAt?.(event)) throw new Error(`refusing event ${event.globalPosition}`);
      await tx.query(
        `INSERT INTO ${table} (position, applied, late) VALUES ($1, 1, $2)
         ON CONFLICT (position) DO UPDATE SET applied = ${table}.applied + 1`,
        [event.globalPosition.toString(), event.late === true],
      );
    },
  });
}

export interface LogRow {
  position: number;
  applied: number;
  late: boolean;
}

/** The log in application order. */
export async function readLog(db: pg.Pool, name: string): Promise<LogRow[]> {
  const { rows } = await db.query(`SELECT position::int, applied, late FROM log_${name} ORDER BY seq`);
  return rows;
}

export async function committedPositions(db: pg.Pool): Promise<number[]> {
  const { rows } = await db.query('SELECT global_position::int AS p FROM events ORDER BY global_position');
  return rows.map((r) => r.p);
}

/**
 * Waits until every committed event is in every log. Lag 0 is not enough: an event held past the gap timeout that
 * commits at the very end is delivered late, after the checkpoints have reached the head.
 */
export async function waitUntilAllApplied(db: pg.Pool, committed: number[], names: string[], timeoutMs: number) {
  await waitFor(
    `every committed event applied by ${names.join(', ')}`,
    async () => {
      const { rows } = await db.query('SELECT min(position)::int AS p, count(*)::int AS n FROM projection_checkpoints');
      if (rows[0].n < names.length || rows[0].p !== committed.at(-1)) return false;
      for (const name of names) {
        const { rows: n } = await db.query(`SELECT count(DISTINCT position)::int AS n FROM log_${name}`);
        if (n[0].n !== committed.length) return false;
      }
      return true;
    },
    timeoutMs,
  );
}

/** The invariant: every committed event applied exactly once, in global order except the ones flagged late. */
export async function expectExactlyOnceInOrder(db: pg.Pool, name: string, committed: number[]): Promise<LogRow[]> {
  const log = await readLog(db, name);
  expect(log.filter((r) => r.applied !== 1)).toEqual([]);
  expect(log.map((r) => r.position).sort((a, b) => a - b)).toEqual(committed);
  const inOrder = log.filter((r) => !r.late).map((r) => r.position);
  expect(inOrder).toEqual([...inOrder].sort((a, b) => a - b));
  return log;
}
