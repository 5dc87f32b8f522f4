import type pg from 'pg';
import type { StoreNames } from '../db/identifiers.js';
import { ReplayInProgressError } from '../errors.js';
import { eventTable, positionSql } from '../sources/event-table.js';

/** The SQL of replay requests: a row per request (the database refuses a second active one) plus a NOTIFY. */

export interface ReplayRow {
  id: bigint;
  projection: string;
  status: 'pending' | 'running' | 'done' | 'failed';
  target: bigint | null;
  applied: bigint;
  error: string | null;
}

export async function requestReplay(pool: pg.Pool, names: StoreNames, projection: string, requestedBy: string): Promise<bigint> {
  try {
    const { rows } = await pool.query<{ id: string }>(
      `WITH r AS (
         INSERT INTO ${names.q.replays} (projection, status, requested_by) VALUES ($1, 'pending', $2) RETURNING id
       )
       SELECT id::text, pg_notify($3, $1) FROM r`,
      [projection, requestedBy, names.replayChannel],
    );
    return BigInt(rows[0]!.id);
  } catch (error) {
    if ((error as { code?: string }).code === '23505') throw new ReplayInProgressError(projection);
    throw error;
  }
}

/**
 * Claims the requests of projections this instance owns: the pending ones, and the ones claimed before whose reset
 * never committed (`running` without a target: their claimer, this instance or one that owned the projection
 * before, died or lost its database between the claim and the reset). Only the owner of a projection claims its
 * requests, and it serves what it claimed before its next pass, so such a row has no one else working on it: the
 * reset is done again.
 */
export async function claimReplays(db: pg.Pool, names: StoreNames, owned: string[]): Promise<ReplayRow[]> {
  if (owned.length === 0) return [];
  const { rows } = await db.query(
    `UPDATE ${names.q.replays} SET status = 'running', started_at = now()
      WHERE (status = 'pending' OR (status = 'running' AND target IS NULL)) AND projection = ANY($1)
      RETURNING id::text, projection`,
    [owned],
  );
  return rows.map((r) => ({ id: BigInt(r.id), projection: r.projection, status: 'running', target: null, applied: 0n, error: null }));
}

/**
 * Resets the read model and the checkpoint in one transaction: the projection's own `reset`, checkpoint to 0, every
 * late notice pending again, and its skipped-position and late-delivery records gone.
 * Returns the target (the head at the time of the reset).
 */
export async function resetForReplay(
  tx: pg.ClientBase,
  names: StoreNames,
  projection: string,
  replayId: bigint,
  reset: ((db: pg.ClientBase) => Promise<void>) | undefined,
): Promise<bigint> {
  await reset?.(tx);
  await tx.query(
    `UPDATE ${names.q.checkpoints}
        SET position = 0, state = 'replaying', last_error = NULL, updated_at = now(),
            late_seen_id = 0
      WHERE name = $1`,
    [projection],
  );
  // A rebuild records anew what it skips, and every late notice is pending again (late_seen_id 0): the rebuild may
  // read a page held from before a late commit, and then the notice is how that event reaches it. Only positions it
  // skips again are claimed (claimLateDeliveries), each once.
  await tx.query(`DELETE FROM ${names.q.lateDeliveries} WHERE projection = $1`, [projection]);
  await tx.query(`DELETE FROM ${names.q.skippedPositions} WHERE projection = $1`, [projection]);
  const t = eventTable(names);
  const { rows } = await tx.query<{ target: string }>(
    // The target is the head (every committed event at the time of the reset), not H: on a store the tracker has
    // not scanned yet, H may still be 0.
    `UPDATE ${names.q.replays} SET target = (SELECT coalesce(max(${positionSql(t, 'e')}), 0) FROM ${t.table} e)
      WHERE id = $1 RETURNING target::text`,
    [replayId.toString()],
  );
  return BigInt(rows[0]!.target);
}

export async function recordReplayProgress(
  db: pg.Pool,
  names: StoreNames,
  replayId: bigint,
  applied: number,
  done: boolean,
  error?: string,
): Promise<void> {
  await db.query(
    `UPDATE ${names.q.replays}
        SET applied = applied + $2,
            status = CASE WHEN $4::text IS NOT NULL THEN 'failed' WHEN $3 THEN 'done' ELSE status END,
            finished_at = CASE WHEN $3 OR $4::text IS NOT NULL THEN now() ELSE finished_at END,
            error = $4
      WHERE id = $1`,
    [replayId.toString(), applied, done, error ?? null],
  );
}

export async function readReplay(db: pg.Pool, names: StoreNames, id: bigint): Promise<ReplayRow> {
  const { rows } = await db.query(
    `SELECT id::text, projection, status, target::text, applied::text, error FROM ${names.q.replays} WHERE id = $1`,
    [id.toString()],
  );
  const r = rows[0];
  return {
    id: BigInt(r.id),
    projection: r.projection,
    status: r.status,
    target: r.target === null ? null : BigInt(r.target),
    applied: BigInt(r.applied),
    error: r.error,
  };
}

/**
 * The replay another instance was running when it died or gave the projection up, its reset done (a target is set):
 * the new owner carries it on to the end. One without a target is claimed again instead (claimReplays).
 */
export async function findRunningReplay(
  db: pg.Pool,
  names: StoreNames,
  projection: string,
): Promise<{ id: bigint; target: bigint } | undefined> {
  const { rows } = await db.query<{ id: string; target: string | null }>(
    `SELECT id::text, target::text FROM ${names.q.replays} WHERE projection = $1 AND status = 'running'`,
    [projection],
  );
  const row = rows[0];
  return row && row.target !== null ? { id: BigInt(row.id), target: BigInt(row.target) } : undefined;
}

/**
 * The projection failed (its handler kept failing) while rebuilding: the request ends `failed` with the error the
 * projection recorded, so that `replay` stops following it and says why, and a new replay can be requested.
 */
export async function failReplay(db: pg.Pool, names: StoreNames, replayId: bigint, applied: number, reason?: string): Promise<string> {
  const { rows } = await db.query<{ error: string }>(
    `WITH failure AS (
       SELECT c.last_error AS e FROM ${names.q.replays} r JOIN ${names.q.checkpoints} c ON c.name = r.projection WHERE r.id = $1
     )
     UPDATE ${names.q.replays}
        SET applied = applied + $2, status = 'failed', finished_at = now(),
            error = coalesce($3,
              (SELECT CASE WHEN e ? 'position'
                           THEN format('handler failed at position %s (%s): %s', e->>'position', e->>'type', coalesce(e->>'message', e::text))
                           ELSE coalesce(e->>'message', e::text) END
                 FROM failure),
              'the projection failed (no error recorded)')
      WHERE id = $1 AND status IN ('pending', 'running')
      RETURNING error`,
    [replayId.toString(), applied, reason ?? null],
  );
  return rows[0]?.error ?? 'the projection failed';
}

/**
 * The requester gave up before anyone took its request up (interrupted, or nobody served it in time): never carried
 * out later by surprise. One statement for both request tables (replays, and retry/skip in projection_commands).
 * True when it was still pending and is withdrawn now.
 */
export async function withdrawRequest(db: pg.Pool, names: StoreNames, table: 'replays' | 'commands', id: bigint): Promise<boolean> {
  const { rowCount } = await db.query(
    `UPDATE ${names.q[table]} SET status = 'failed', error = 'withdrawn by the requester', finished_at = now()
      WHERE id = $1 AND status = 'pending'`,
    [id.toString()],
  );
  return rowCount === 1;
}
