import type pg from 'pg';
import type { StoreNames } from '../db/identifiers.js';
import type { ProjectionState } from '../projection/projection.js';

/**
 * The SQL of one projection's progress: its checkpoint row (moved by compare-and-set), the given-up positions it
 * passed, and the late deliveries it claimed. The events themselves are read by the source (sources/native.ts).
 */

export interface Checkpoint {
  position: bigint;
  lateSeenId: bigint;
  state: ProjectionState;
  lastError: unknown;
}

export interface FailureRecord {
  message: string;
  position: string;
  type: string;
  at: string;
}

export async function ensureCheckpoint(db: pg.ClientBase | pg.Pool, names: StoreNames, name: string): Promise<Checkpoint> {
  await db.query(`INSERT INTO ${names.q.checkpoints} (name) VALUES ($1) ON CONFLICT (name) DO NOTHING`, [name]);
  const { rows } = await db.query<{ position: string; late_seen_id: string; state: ProjectionState; last_error: unknown }>(
    `SELECT position::text, late_seen_id::text, state, last_error FROM ${names.q.checkpoints} WHERE name = $1`,
    [name],
  );
  const row = rows[0]!;
  return { position: BigInt(row.position), lateSeenId: BigInt(row.late_seen_id), state: row.state, lastError: row.last_error };
}

export interface BatchContext {
  highWater: bigint;
  /** Late notices this projection has not dealt with yet. */
  pendingLate: Array<{ id: bigint; position: bigint }>;
  /** The build's role and schema (JSON), read with the build scope (BuildSlot.scopeSql); undefined without one. */
  buildScope?: string | null;
}

/**
 * Starts the batch transaction and reads its context in one round trip, one snapshot: H and the pending late notices,
 * and with `scope` (a build's select-list, BuildSlot.scopeSql) its role and search path.
 * The number is inlined (the simple protocol takes no parameters with several statements): an integer of our own,
 * never user input.
 */
export async function beginBatch(tx: pg.ClientBase, names: StoreNames, lateSeenId: bigint, scope?: string): Promise<BatchContext> {
  const results = (await tx.query(
    `BEGIN;
     SELECT (SELECT position::text FROM ${names.q.highWater}) AS hw,
            (SELECT coalesce(array_agg(id || '-' || from_position ORDER BY id), '{}') FROM ${names.q.gaps}
              WHERE resolution = 'late' AND id > ${BigInt(lateSeenId).toString()}) AS late
            ${scope ? `, ${scope}` : ''}`,
  )) as unknown as Array<pg.QueryResult<{ hw: string; late: string[]; build_scope?: string | null }>>;
  const row = results[1]!.rows[0]!;
  const pair = (text: string): [bigint, bigint] => {
    const [a, b] = text.split('-');
    return [BigInt(a!), BigInt(b!)];
  };
  return {
    highWater: BigInt(row.hw),
    pendingLate: row.late.map(pair).map(([id, position]) => ({ id, position })),
    buildScope: row.build_scope,
  };
}

/** Given-up (dead or timed-out) ranges that overlap (after, upTo], clipped to it. */
export async function givenUpRanges(tx: pg.ClientBase, names: StoreNames, after: bigint, upTo: bigint): Promise<Array<[bigint, bigint]>> {
  const { rows } = await tx.query<{ f: string; t: string }>({
    name: `pr_given_up_${names.schema}_${names.table}`,
    text: `SELECT greatest(from_position, $1 + 1)::text AS f, least(to_position, $2)::text AS t FROM ${names.q.gaps}
            WHERE resolution IN ('timed_out', 'dead') AND from_position <= $2 AND to_position > $1
            ORDER BY from_position`,
    values: [after.toString(), upTo.toString()],
  });
  return rows.map((r) => [BigInt(r.f), BigInt(r.t)]);
}

/** Records positions of given-up gaps that the projection passed without reading them (see skippedPositions). */
export async function recordSkipped(
  tx: pg.ClientBase,
  names: StoreNames,
  projection: string,
  ranges: Array<[bigint, bigint]>,
): Promise<void> {
  if (ranges.length === 0) return;
  await tx.query(
    `INSERT INTO ${names.q.skippedPositions} (projection, from_position, to_position)
     SELECT $1, f, t FROM unnest($2::bigint[], $3::bigint[]) AS r(f, t) ON CONFLICT DO NOTHING`,
    [projection, ranges.map((r) => r[0].toString()), ranges.map((r) => r[1].toString())],
  );
}

/**
 * Of the late positions given, those this projection must apply now: it skipped them (they were missing when it
 * passed) and has not applied them late before. Records them as applied (in the caller's transaction), so each is
 * applied exactly once, however old the notice.
 */
export async function claimLateDeliveries(
  tx: pg.ClientBase,
  names: StoreNames,
  projection: string,
  positions: bigint[],
): Promise<bigint[]> {
  if (positions.length === 0) return [];
  const { rows } = await tx.query<{ position: string }>(
    `INSERT INTO ${names.q.lateDeliveries} (projection, position)
     SELECT $1, p FROM unnest($2::bigint[]) AS p
      WHERE EXISTS (SELECT 1 FROM ${names.q.skippedPositions} s
                     WHERE s.projection = $1 AND s.from_position <= p AND s.to_position >= p)
     ON CONFLICT DO NOTHING RETURNING position::text`,
    [projection, positions.map(String)],
  );
  return rows.map((r) => BigInt(r.position));
}

/**
 * Moves the checkpoint: a compare-and-set on the previous position, inside the batch's transaction. Zero rows means
 * another instance moved it (we lost ownership): the caller rolls back.
 */
export async function saveCheckpoint(
  tx: pg.ClientBase,
  names: StoreNames,
  name: string,
  expected: bigint,
  next: { position: bigint; lateSeenId: bigint; state: ProjectionState; lastError?: FailureRecord | null; owner: string },
): Promise<boolean> {
  const result = await tx.query({
    name: `pr_checkpoint_${names.schema}_${names.table}`,
    text: `UPDATE ${names.q.checkpoints}
              SET position = $3, late_seen_id = $4, state = $5, last_error = $6, owner = $7, updated_at = now()
            WHERE name = $1 AND position = $2`,
    values: [
      name,
      expected.toString(),
      next.position.toString(),
      next.lateSeenId.toString(),
      next.state,
      next.lastError ? JSON.stringify(next.lastError) : null,
      next.owner,
    ],
  });
  return result.rowCount === 1;
}

export async function setProjectionState(
  db: pg.ClientBase | pg.Pool,
  names: StoreNames,
  name: string,
  state: ProjectionState,
  owner: string | null,
): Promise<void> {
  await db.query(`UPDATE ${names.q.checkpoints} SET state = $2, owner = $3, updated_at = now() WHERE name = $1`, [name, state, owner]);
}
