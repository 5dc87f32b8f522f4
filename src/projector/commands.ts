import type pg from 'pg';
import type { StoreNames } from '../db/identifiers.js';

/**
 * Operator commands for a failed projection (retry, skip): the CLI writes a row and a NOTIFY; the instance that owns
 * the projection claims it, its projector carries it out between two batches, and the outcome lands in the row.
 */

export type CommandKind = 'retry' | 'skip';

export interface CommandRow {
  id: bigint;
  projection: string;
  command: CommandKind;
  deadLetters: boolean;
  position: bigint | null;
  status: 'pending' | 'running' | 'done' | 'failed';
  result: Record<string, unknown> | null;
  error: string | null;
}

/** A row as COMMAND_COLUMNS selects it: bigints as text. */
type CommandRecord = Omit<CommandRow, 'id' | 'deadLetters' | 'position'> & { id: string; dead_letters: boolean; position: string | null };

function toCommand(r: CommandRecord): CommandRow {
  return {
    id: BigInt(r.id),
    projection: r.projection,
    command: r.command,
    deadLetters: r.dead_letters,
    position: r.position === null ? null : BigInt(r.position),
    status: r.status,
    result: r.result,
    error: r.error,
  };
}

const COMMAND_COLUMNS = 'id::text, projection, command, dead_letters, position::text, status, result, error';

/** A row plus a NOTIFY on the replay channel, which wakes the ownership loop of every instance. */
export async function requestCommand(
  pool: pg.Pool,
  names: StoreNames,
  request: { projection: string; command: CommandKind; deadLetters?: boolean; position?: bigint; requestedBy: string },
): Promise<bigint> {
  const { rows } = await pool.query<{ id: string }>(
    `WITH c AS (
       INSERT INTO ${names.q.commands} (projection, command, dead_letters, position, status, requested_by)
       VALUES ($1, $2, $3, $4, 'pending', $5) RETURNING id
     )
     SELECT id::text, pg_notify($6, $1) FROM c`,
    [
      request.projection,
      request.command,
      request.deadLetters ?? false,
      request.position?.toString() ?? null,
      request.requestedBy,
      names.replayChannel,
    ],
  );
  return BigInt(rows[0]!.id);
}

/** Claims the pending commands of projections this instance owns, oldest first. */
export async function claimCommands(db: pg.Pool, names: StoreNames, owned: string[]): Promise<CommandRow[]> {
  if (owned.length === 0) return [];
  const { rows } = await db.query<CommandRecord>(
    `UPDATE ${names.q.commands} SET status = 'running', started_at = now()
      WHERE status = 'pending' AND projection = ANY($1) RETURNING ${COMMAND_COLUMNS}`,
    [owned],
  );
  return rows.map(toCommand).sort((a, b) => (a.id < b.id ? -1 : 1));
}

export async function finishCommand(
  db: pg.Pool,
  names: StoreNames,
  id: bigint,
  outcome: { result: Record<string, unknown> } | { error: string },
): Promise<void> {
  await db.query(
    `UPDATE ${names.q.commands}
        SET status = $2, result = $3, error = $4, finished_at = now() WHERE id = $1 AND status IN ('pending', 'running')`,
    [
      id.toString(),
      'error' in outcome ? 'failed' : 'done',
      'result' in outcome ? JSON.stringify(outcome.result) : null,
      'error' in outcome ? outcome.error : null,
    ],
  );
}

export async function readCommand(db: pg.Pool, names: StoreNames, id: bigint): Promise<CommandRow> {
  const { rows } = await db.query<CommandRecord>(`SELECT ${COMMAND_COLUMNS} FROM ${names.q.commands} WHERE id = $1`, [id.toString()]);
  return toCommand(rows[0]!);
}
