import type pg from 'pg';
import { withTransaction } from '../db/connection.js';
import type { StoreNames } from '../db/identifiers.js';
import { saveCheckpoint } from './checkpoints.js';
import { OwnershipLostError } from '../errors.js';
import type { ProjectionState } from '../projection/projection.js';
import { EVENT_COLUMNS, toStoredEvent, type EventRow, type StoredEvent } from '../store/types.js';

/**
 * The SQL of the error policy's dead letters: events a projection's handler kept failing on, set aside (with the
 * checkpoint moved past them, in one transaction) so the projection could go on, and re-delivered on `retry`.
 */

export interface DeadLetterInput {
  projection: string;
  event: StoredEvent;
  error: string;
  attempts: number;
  reason: 'policy' | 'command';
  owner: string;
  /** The checkpoint the caller believes in: the compare-and-set that fences ownership. */
  expected: bigint;
  /** State written with the checkpoint (the projection goes on). */
  state: ProjectionState;
  /** Unchanged by a dead letter; written back as it is (saveCheckpoint writes the whole progress). */
  lateSeenId: bigint;
}

/**
 * Sets `event` aside and moves the checkpoint past it, in one transaction: either both happen or neither. Returns the
 * new checkpoint. The caller has applied every event before it (the checkpoint is at the position just before it, or
 * past it for a late event). Throws OwnershipLostError when the checkpoint moved under us.
 */
export async function deadLetterAndAdvance(pool: pg.Pool, names: StoreNames, input: DeadLetterInput): Promise<bigint> {
  const t = names.q;
  const e = input.event;
  const next = e.globalPosition > input.expected ? e.globalPosition : input.expected;
  return withTransaction(pool, async (client) => {
    await client.query(
      `INSERT INTO ${t.deadLetters}
         (projection, global_position, stream_name, stream_position, type, data, metadata, recorded_at, late, error,
          attempts, reason, dead_lettered_by)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
       ON CONFLICT (projection, global_position) WHERE redelivered_at IS NULL
       DO UPDATE SET error = excluded.error, attempts = excluded.attempts, reason = excluded.reason,
                     dead_lettered_by = excluded.dead_lettered_by, dead_lettered_at = now(), late = excluded.late`,
      [
        input.projection,
        e.globalPosition.toString(),
        e.streamName,
        e.streamPosition.toString(),
        e.type,
        JSON.stringify(e.data ?? null),
        JSON.stringify(e.metadata ?? {}),
        e.recordedAt,
        e.late === true,
        input.error,
        input.attempts,
        input.reason,
        input.owner,
      ],
    );
    // Dealt with, as far as late notices go: a late notice for this position must not bring the event back through
    // the late path (the dead letter is its only way back, and it is re-delivered at most once).
    await client.query(`INSERT INTO ${names.q.lateDeliveries} (projection, position) VALUES ($1, $2) ON CONFLICT DO NOTHING`, [
      input.projection,
      e.globalPosition.toString(),
    ]);
    const moved = await saveCheckpoint(client, names, input.projection, input.expected, {
      position: next,
      lateSeenId: input.lateSeenId,
      state: input.state,
      lastError: null,
      owner: input.owner,
    });
    if (!moved) throw new OwnershipLostError(input.projection);
    return next;
  });
}

export interface DeadLetter {
  id: bigint;
  projection: string;
  position: bigint;
  streamName: string;
  streamPosition: bigint;
  type: string;
  late: boolean;
  error: string;
  attempts: number;
  reason: 'policy' | 'command';
  deadLetteredAt: Date;
  redeliveredAt: Date | null;
  lastRedeliveryError: string | null;
  /** A replay reset the read model after it was dead-lettered: the rebuild read the event again, so it is never re-delivered. */
  superseded: boolean;
}

const DEAD_LETTER_COLUMNS = (names: StoreNames) => `
  d.id::text, d.projection, d.global_position::text AS position, d.stream_name, d.stream_position::text, d.type, d.late,
  d.error, d.attempts, d.reason, d.dead_lettered_at, d.redelivered_at, d.last_redelivery_error,
  EXISTS (SELECT 1 FROM ${names.q.replays} r
           WHERE r.projection = d.projection AND r.target IS NOT NULL AND r.started_at > d.dead_lettered_at) AS superseded`;

/** A row as DEAD_LETTER_COLUMNS selects it: bigints as text. */
interface DeadLetterRecord {
  id: string;
  projection: string;
  position: string;
  stream_name: string;
  stream_position: string;
  type: string;
  late: boolean;
  error: string;
  attempts: number;
  reason: DeadLetter['reason'];
  dead_lettered_at: Date;
  redelivered_at: Date | null;
  last_redelivery_error: string | null;
  superseded: boolean;
}

function toDeadLetter(r: DeadLetterRecord): DeadLetter {
  return {
    id: BigInt(r.id),
    projection: r.projection,
    position: BigInt(r.position),
    streamName: r.stream_name,
    streamPosition: BigInt(r.stream_position),
    type: r.type,
    late: r.late,
    error: r.error,
    attempts: r.attempts,
    reason: r.reason,
    deadLetteredAt: r.dead_lettered_at,
    redeliveredAt: r.redelivered_at,
    lastRedeliveryError: r.last_redelivery_error,
    superseded: r.superseded,
  };
}

/** Every dead letter of a projection, oldest event first. */
export async function listDeadLetters(db: pg.Pool | pg.ClientBase, names: StoreNames, projection: string): Promise<DeadLetter[]> {
  const { rows } = await db.query<DeadLetterRecord>(
    `SELECT ${DEAD_LETTER_COLUMNS(names)} FROM ${names.q.deadLetters} d
      WHERE d.projection = $1 ORDER BY d.global_position, d.id`,
    [projection],
  );
  return rows.map(toDeadLetter);
}

/** Dead letters waiting for re-delivery: not re-delivered yet and not superseded by a replay. */
export async function pendingDeadLetterIds(db: pg.Pool, names: StoreNames, projection: string): Promise<bigint[]> {
  return (await listDeadLetters(db, names, projection)).filter((d) => d.redeliveredAt === null && !d.superseded).map((d) => d.id);
}

/**
 * Inside the re-delivery transaction: locks the dead letter and returns its event, or undefined when it was
 * re-delivered meanwhile (by another command): the row lock and the redelivered_at check make it at most once.
 */
export async function claimDeadLetter(tx: pg.ClientBase, names: StoreNames, id: bigint): Promise<StoredEvent | undefined> {
  const { rows } = await tx.query<EventRow & { late: boolean }>(
    `SELECT ${EVENT_COLUMNS}, d.late
       FROM ${names.q.deadLetters} d WHERE d.id = $1 AND d.redelivered_at IS NULL FOR UPDATE`,
    [id.toString()],
  );
  const row = rows[0];
  if (!row) return undefined;
  const event = toStoredEvent(row);
  if (row.late) event.late = true;
  return event;
}

/** In the same transaction as the handler's writes. */
export async function markRedelivered(tx: pg.ClientBase, names: StoreNames, id: bigint): Promise<void> {
  await tx.query(`UPDATE ${names.q.deadLetters} SET redelivered_at = now(), last_redelivery_error = NULL WHERE id = $1`, [id.toString()]);
}

export async function recordRedeliveryError(db: pg.Pool, names: StoreNames, id: bigint, error: string): Promise<void> {
  await db.query(`UPDATE ${names.q.deadLetters} SET last_redelivery_error = $2 WHERE id = $1`, [id.toString(), error]);
}

/** Dead letters waiting for re-delivery, per projection (for `status`). */
export function pendingDeadLettersCountSql(names: StoreNames, projectionExpr: string): string {
  return `(SELECT count(*) FROM ${names.q.deadLetters} d
            WHERE d.projection = ${projectionExpr} AND d.redelivered_at IS NULL
              AND NOT EXISTS (SELECT 1 FROM ${names.q.replays} r
                               WHERE r.projection = d.projection AND r.target IS NOT NULL AND r.started_at > d.dead_lettered_at))`;
}
