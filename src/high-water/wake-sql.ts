import type pg from 'pg';
import type { StoreNames } from '../db/identifiers.js';
import type { FlagChange } from './wake.js';

/**
 * The wake-up flag's SQL (wake.ts says what it means). setval() is not transactional: writers read the new value as
 * soon as it returns. For "notify" it returns the fence: a transaction id taken by a *later* statement, so that it
 * is above the id of every writer that read the flag before the setval (ids are handed out in order). Not the xmax of
 * a snapshot: that is one past the latest completed id, below a running writer's. The statement commits at once, so
 * the fence's own transaction holds no observation back.
 */
export async function writeWakeFlag(
  db: pg.Pool | pg.ClientBase,
  names: StoreNames,
  flag: Exclude<FlagChange, undefined>,
): Promise<bigint | undefined> {
  await db.query(`SELECT ${names.q.setWakeFlag}($1)`, [flag === 'notify']);
  if (flag === 'silent') return undefined;
  const { rows } = await db.query<{ fence: string }>(`SELECT pg_current_xact_id()::text AS fence`);
  return BigInt(rows[0]!.fence);
}
