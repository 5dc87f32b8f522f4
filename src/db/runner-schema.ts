import type pg from 'pg';
import { ConfigError } from '../errors.js';
import type { StoreNames } from './identifiers.js';

/**
 * A runner schema serves one event table. Its H, gaps, late notices and checkpoints describe the positions of one
 * table: two tables sharing them (two daemons, one per table, with one `--schema`) read each other's H past their
 * own missing positions, and a position that was never given up there is never delivered, not even late. So the
 * schema records the table it serves (`projection_high_water.source`, migration 8, written in migrate's transaction
 * under its lock) and every later migrate refuses another table with a ConfigError that names both and the way out.
 * The runner's state keyed by source would serve several tables from one schema; one schema per table is what
 * Marten, Emmett and Eventide's consumers do too (one store's bookkeeping per schema), and it needs no key in
 * every statement of the tracker and the projectors.
 */

const SCHEMA_SETTING = '--schema (PROJECTION_RUNNER_SCHEMA)';

/** The events table a runner schema records, `schema.table`, as migration 8 writes it. */
export function sourceKey(names: StoreNames): string {
  return `${names.source.schema}.${names.source.table}`;
}

/** What a runner schema says about the table it serves. */
export type SchemaOwner =
  /** No runner tables there yet. */
  | { kind: 'free' }
  /** The table recorded (migration 8). */
  | { kind: 'recorded'; table: string }
  /** Runner tables of a version before migration 8: the table is not recorded. */
  | { kind: 'unrecorded' };

/** Pure: whether `names` may use a schema whose owner is `owner`; `ownRunnerTables`: its own migrations made them. */
export function refusal(names: StoreNames, owner: SchemaOwner, ownRunnerTables: boolean): ConfigError | undefined {
  const mine = sourceKey(names);
  const wayOut = `give each event table a runner schema of its own: ${SCHEMA_SETTING}`;
  if (owner.kind === 'recorded' && owner.table !== mine) {
    return new ConfigError(
      SCHEMA_SETTING,
      `the runner schema "${names.schema}" serves the event table ${owner.table} (its high-water mark, gaps and checkpoints), not ${mine}: ${wayOut}`,
    );
  }
  if (owner.kind === 'unrecorded' && !ownRunnerTables) {
    return new ConfigError(
      SCHEMA_SETTING,
      `the runner schema "${names.schema}" holds the runner tables of another event table (created by another source's migrate), not ${mine}: ${wayOut}`,
    );
  }
  return undefined;
}

/** Reads the record (one statement; no lock: migrate's transaction holds its own). */
export async function readSchemaOwner(db: pg.ClientBase | pg.Pool, names: StoreNames): Promise<SchemaOwner> {
  const { rows } = await db.query<{ present: boolean; recorded: boolean }>(
    `SELECT to_regclass($1) IS NOT NULL AS present,
            EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass($1) AND attname = 'source' AND NOT attisdropped) AS recorded`,
    [names.q.highWater],
  );
  const { present, recorded } = rows[0]!;
  let table: string | null = null;
  if (recorded) {
    const { rows: sources } = await db.query<{ source: string | null }>(`SELECT source FROM ${names.q.highWater}`);
    table = sources[0]?.source ?? null;
  }
  if (!present) return { kind: 'free' };
  return table === null ? { kind: 'unrecorded' } : { kind: 'recorded', table };
}

/** Throws the ConfigError of `refusal` when `names` may not use its runner schema. */
export async function checkSchemaOwner(db: pg.ClientBase | pg.Pool, names: StoreNames, ownRunnerTables: boolean): Promise<void> {
  const refused = refusal(names, await readSchemaOwner(db, names), ownRunnerTables);
  if (refused) throw refused;
}
