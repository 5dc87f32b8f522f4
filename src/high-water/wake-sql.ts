import type pg from 'pg';
import type { StoreNames } from '../db/identifiers.js';
import type { FlagChange } from './wake.js';

/**
 * The wake-up flag's SQL (wake.ts says what it means). setval() is not transactional: writers read the new value as
 * soon as it returns. For "notify" it returns the fence: the xmax of a snapshot taken by a *later* statement (a
 * statement's snapshot is taken before it runs, so the same statement's snapshot would precede the setval).
 */
export async function writeWakeFlag(
  db: pg.Pool | pg.ClientBase,
  names: StoreNames,
  flag: Exclude<FlagChange, undefined>,
): Promise<bigint | undefined> {
  await db.query(`SELECT ${names.q.setWakeFlag}($1)`, [flag === 'notify']);
  if (flag === 'silent') return undefined;
  const { rows } = await db.query<{ xmax: string }>(`SELECT pg_snapshot_xmax(pg_current_snapshot())::text AS xmax`);
  return BigInt(rows[0]!.xmax);
}
