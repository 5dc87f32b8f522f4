import type pg from 'pg';
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
