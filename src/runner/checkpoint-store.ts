import type pg from 'pg';
import type { StoreNames } from '../db/identifiers.js';
import type { ProjectionState } from '../metrics/registry.js';
import { EVENT_COLUMNS, toStoredEvent, type EventRow, type StoredEvent } from '../store/types.js';

/** The SQL of one projection's progress: checkpoint row, the batch it reads, late notices, replay requests. */

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
  /** Gaps given up on recently: an event applied at one of these positions is recorded (see lateDeliveries). */
  deadRanges: Array<[bigint, bigint]>;
  /** Late notices this projection has not dealt with yet. */
  pendingLate: Array<{ id: bigint; position: bigint }>;
}

/**
 * Starts the batch transaction and reads its context in one round trip. The context is one statement, one snapshot:
 * H together with the gaps given up below it (a gap is persisted as given up in the same transaction that moves H past
 * it, so every position <= H that lies in a given-up gap is in `deadRanges`) and the pending late notices.
 * The two numbers are inlined (the simple protocol takes no parameters with several statements): both are integers
 * of our own, never user input.
 */
export async function beginBatch(
  tx: pg.ClientBase,
  names: StoreNames,
  lateSeenId: bigint,
  deadRangeWindowMs: number,
): Promise<BatchContext> {
  const results = (await tx.query(
    `BEGIN;
     SELECT (SELECT position::text FROM ${names.q.highWater}) AS hw,
            (SELECT coalesce(array_agg(from_position || '-' || to_position), '{}') FROM ${names.q.gaps}
              WHERE resolution IN ('timed_out', 'dead')
                AND resolved_at > now() - ${Math.trunc(deadRangeWindowMs)} * interval '1 millisecond') AS dead,
            (SELECT coalesce(array_agg(id || '-' || from_position ORDER BY id), '{}') FROM ${names.q.gaps}
              WHERE resolution = 'late' AND id > ${BigInt(lateSeenId).toString()}) AS late`,
  )) as unknown as Array<pg.QueryResult<{ hw: string; dead: string[]; late: string[] }>>;
  const row = results[1]!.rows[0]!;
  const pair = (text: string): [bigint, bigint] => {
    const [a, b] = text.split('-');
    return [BigInt(a!), BigInt(b!)];
  };
  return {
    highWater: BigInt(row.hw),
    deadRanges: row.dead.map(pair),
    pendingLate: row.late.map(pair).map(([id, position]) => ({ id, position })),
  };
}

export async function readEvents(
  tx: pg.ClientBase | pg.Pool,
  names: StoreNames,
  after: bigint,
  upTo: bigint,
  limit: number,
  eventTypes: string[] | undefined,
): Promise<StoredEvent[]> {
  const { rows } = await tx.query<EventRow>({
    // Named: parsed and planned once per connection, it is the hot query of every replay.
    name: eventTypes ? `pr_read_typed_${names.schema}_${names.table}` : `pr_read_${names.schema}_${names.table}`,
    text: `SELECT ${EVENT_COLUMNS} FROM ${names.q.events}
            WHERE global_position > $1 AND global_position <= $2 ${eventTypes ? 'AND type = ANY($4)' : ''}
            ORDER BY global_position LIMIT $3`,
    values: eventTypes ? [after.toString(), upTo.toString(), limit, eventTypes] : [after.toString(), upTo.toString(), limit],
  });
  return rows.map(toStoredEvent);
}

/** Records applied positions that lie in given-up gaps; returns those not recorded before (the ones to apply). */
export async function recordDeadPositionDeliveries(
  tx: pg.ClientBase,
  names: StoreNames,
  projection: string,
  positions: bigint[],
): Promise<bigint[]> {
  if (positions.length === 0) return [];
  const { rows } = await tx.query<{ position: string }>(
    `INSERT INTO ${names.q.lateDeliveries} (projection, position)
     SELECT $1, unnest($2::bigint[]) ON CONFLICT DO NOTHING RETURNING position::text`,
    [projection, positions.map(String)],
  );
  return rows.map((r) => BigInt(r.position));
}

export async function readEventsAt(tx: pg.ClientBase, names: StoreNames, positions: bigint[]): Promise<StoredEvent[]> {
  const { rows } = await tx.query<EventRow>(
    `SELECT ${EVENT_COLUMNS} FROM ${names.q.events} WHERE global_position = ANY($1::bigint[]) ORDER BY global_position`,
    [positions.map(String)],
  );
  return rows.map(toStoredEvent);
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
  await db.query(`UPDATE ${names.q.checkpoints} SET state = $2, owner = $3, updated_at = now() WHERE name = $1`, [
    name,
    state,
    owner,
  ]);
}
