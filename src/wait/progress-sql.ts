import type pg from 'pg';
import { preparedStatement } from '../db/prepared.js';
import type { StoreNames } from '../db/identifiers.js';
import { heldLeaseCondition, leaseNamespace } from '../ownership/leases.js';
import { skippedUndeliveredSql } from '../projector/checkpoints.js';
import { WAIT_TYPE_SCAN_LIMIT } from '../projector/deferral.js';
import { columnSql, deliveredFilterSql, eventTable, positionSql } from '../sources/event-table.js';
import type { ProjectionProgress } from './decide.js';

/**
 * The waiter's reads. One statement per look for every wait at once (`readProgress`, which also raises the waited
 * position when the waiter asks), and the explanations of a timeout (`readBlockers`). Neither grows with the store's
 * history: each reads the checkpoint rows and probes indexes from a checkpoint up.
 */

/**
 * How far past its checkpoint row a projection with an event-type filter is credited without its row moving: a
 * batch that wrote nothing leaves its checkpoint move in memory for up to a second (mayDeferCheckpoint), so a wait
 * must not rely on the row alone. Beyond this many positions the row is trusted as it is (the projectors write such a
 * move for a pending wait: deferral.ts waitNeedsMove), so the scan stays short whatever the filter.
 */
const TYPE_SCAN_LIMIT = WAIT_TYPE_SCAN_LIMIT;

/** At most this many pending late notices per projection are read (a wait only needs the lowest ones). */
const LATE_READ_LIMIT = 100;

/**
 * Every live build's progress in one snapshot: the checkpoint row, H, and `covered`: the highest position up to which
 * every event of its types (and its source) is applied, counting events it does not take as applied. `$1` the
 * projections (NULL: every one with a checkpoint), `$2` the highest position waited for, `$3` the projections' lease
 * namespace. A later build (`name@vN`) counts only once it is live: the application reads the live one (through the
 * read views), also across a switch. `explain`: also whether an instance holds its lease, whether it replays or a new
 * version is being built (what a timeout explains; the lock table is not read on every look: `owner` is the row's,
 * `replaying` and `building` false without it).
 */
export async function readProgress(
  db: pg.ClientBase,
  names: StoreNames,
  projections: readonly string[] | undefined,
  upTo: bigint,
  { raise, explain = false, named = false }: { raise?: { position: bigint; ttlMs: number }; explain?: boolean; named?: boolean } = {},
): Promise<ProjectionProgress[]> {
  const text = progressSql(names, raise !== undefined, explain);
  const values: unknown[] = [projections ? [...projections] : null, upTo.toString(), explain ? leaseNamespace(names, 'projection') : null];
  if (raise) values.push(raise.position.toString(), raise.ttlMs, names.waitChannel);
  const { rows } = await db.query<{
    projection: string;
    slot: string;
    position: string;
    state: string;
    last_error: { message?: string; position?: string; type?: string } | null;
    owner: string | null;
    owned: boolean;
    high_water: string;
    covered: string;
    late: string[];
    replaying: boolean;
    building: boolean;
    filtered: boolean;
    unreached: string | null;
  }>(named ? { name: preparedStatement(text).name, text, values } : { text, values });
  return rows.map((r) => ({
    projection: r.projection,
    slot: r.slot,
    checkpoint: BigInt(r.position),
    covered: BigInt(r.covered),
    scannedTo: BigInt(r.high_water) < upTo ? BigInt(r.high_water) : upTo,
    state: r.state,
    failure:
      r.state === 'failed' && r.last_error
        ? {
            position: r.last_error.position === undefined ? undefined : BigInt(r.last_error.position),
            type: r.last_error.type,
            message: r.last_error.message ?? 'unknown error',
          }
        : undefined,
    owner: r.owned ? r.owner : null,
    highWater: BigInt(r.high_water),
    // A late commit the tracker has not recorded yet holds a wait like one it has.
    latePending: [...new Set([...(r.unreached === null ? [] : [r.unreached]), ...r.late])].map(BigInt).sort((a, b) => (a < b ? -1 : 1)),
    replaying: r.replaying,
    building: r.building,
    filtered: r.filtered,
  }));
}

/**
 * readProgress's statement; `raising`: it also raises the waited position first ($4 the position, $5 its time to
 * live in ms, $6 the channel: raiseWaited), in the same round trip as the look.
 */
function progressSql(names: StoreNames, raising: boolean, explaining: boolean): string {
  const t = eventTable(names);
  const position = positionSql(t, 'e');
  return (
    // pg_locks is read once (MATERIALIZED): a correlated EXISTS on it called pg_lock_status() again for every row.
    `WITH hw AS (SELECT position AS h FROM ${names.q.highWater}),${
      // Once, whatever the rows (MATERIALIZED: a subquery could be run again for each).
      raising ? `\n     raised AS MATERIALIZED (SELECT ${names.q.raiseWaited}($4::int8, $5::int4, $6::text)),` : ''
    }
${explaining ? "     leases AS MATERIALIZED (SELECT * FROM pg_locks WHERE locktype = 'advisory'),\n" : ''}     live AS (
       SELECT coalesce(b.projection, c.name) AS projection, c.name AS slot, c.position, c.state, c.last_error,
              c.late_seen_id, c.event_types, c.owner
         FROM ${names.q.checkpoints} c LEFT JOIN ${names.q.builds} b ON b.slot = c.name
        WHERE (b.slot IS NULL OR b.role = 'live') AND ($1::text[] IS NULL OR coalesce(b.projection, c.name) = ANY($1::text[]))
     )
     SELECT l.projection, l.slot, l.position::text, l.state, l.last_error, l.owner, hw.h::text AS high_water,
            ${explaining ? `EXISTS (SELECT 1 FROM leases k WHERE ${heldLeaseCondition('k', '$3::text', 'l.slot')})` : '$3::text IS NULL'} AS owned,
            (CASE WHEN l.position >= least(hw.h, $2::int8) OR l.position < least(hw.h, $2::int8) - ${TYPE_SCAN_LIMIT}
                  THEN l.position
                  ELSE coalesce((SELECT ${position} - 1 FROM ${t.table} e
                                  WHERE ${position} > l.position AND ${position} <= least(hw.h, $2::int8)
                                    AND (l.event_types IS NULL OR (${columnSql(t, 'type', 'e')})::text = ANY(l.event_types))
                                    ${deliveredFilterSql(t, 'e')}
                                  ORDER BY ${position} LIMIT 1), least(hw.h, $2::int8)) END)::text AS covered,
            (SELECT coalesce(array_agg(p::text ORDER BY p), '{}') FROM (
               SELECT g.from_position AS p FROM ${names.q.gaps} g
                WHERE g.resolution = 'late' AND g.id > l.late_seen_id AND g.from_position <= $2::int8
                  AND ${skippedUndeliveredSql(names, 'l.slot', 'g.from_position')}
                ORDER BY g.from_position LIMIT ${LATE_READ_LIMIT}) x) AS late,
            ${explaining ? `EXISTS (SELECT 1 FROM ${names.q.replays} r WHERE r.projection = l.slot AND r.status IN ('pending', 'running'))` : 'false'} AS replaying,
            ${explaining ? `EXISTS (SELECT 1 FROM ${names.q.builds} b WHERE b.projection = l.projection AND b.role = 'building')` : 'false'} AS building,
            l.event_types IS NOT NULL AS filtered,
            -- The tracker may not have recorded a late commit yet (the writer's own wait can come first): the lowest
            -- committed event of its types at or below $2 that it passed while given up and has not received late.
            (SELECT ${position} FROM ${names.q.skippedPositions} s
               JOIN ${t.table} e ON ${position} BETWEEN s.from_position AND least(s.to_position, $2::int8)
              WHERE s.projection = l.slot AND s.from_position <= $2::int8
                AND (l.event_types IS NULL OR (${columnSql(t, 'type', 'e')})::text = ANY(l.event_types))
                AND NOT EXISTS (SELECT 1 FROM ${names.q.lateDeliveries} d WHERE d.projection = l.slot AND d.position = ${position})
              ORDER BY 1 LIMIT 1)::text AS unreached
       FROM live l CROSS JOIN hw${raising ? ' CROSS JOIN raised' : ''}
      ORDER BY l.projection`
  );
}

/** The raise alone (readProgress's `raise`), for waits that need no look yet (waiter.ts placeAboveHighWater). */
export async function raiseWaited(db: pg.ClientBase, names: StoreNames, raise: { position: bigint; ttlMs: number }): Promise<void> {
  await db.query(`SELECT ${names.q.raiseWaited}($1::int8, $2::int4, $3::text)`, [
    raise.position.toString(),
    raise.ttlMs,
    names.waitChannel,
  ]);
}

/**
 * Whether `error` says this waiter cannot raise the waited position: the store's schema predates it (migration 13:
 * its functions are missing, 42883), the role may not call them (EXECUTE revoked from PUBLIC, 42501), or the session
 * is read-only (default_transaction_read_only, a replica: 25006).
 */
export function cannotRaise(error: unknown): boolean {
  const code = (error as { code?: string } | undefined)?.code;
  return code === '42883' || code === '42501' || code === '25006';
}

/** What a timeout explains: the open gaps at or below the position, the head, and whether the position was committed. */
export async function readBlockers(
  db: pg.ClientBase,
  names: StoreNames,
  target: bigint,
): Promise<{ head: bigint; committed: boolean; openGaps: Array<{ from: bigint; to: bigint; since: Date }> }> {
  const t = eventTable(names);
  const position = positionSql(t, 'e');
  const { rows } = await db.query<{ head: string; committed: boolean; gaps: Array<{ f: string; t: string; s: string }> }>(
    `SELECT (SELECT head FROM ${names.q.highWater})::text AS head,
            EXISTS (SELECT 1 FROM ${t.table} e WHERE ${position} = $1::int8) AS committed,
            (SELECT coalesce(json_agg(json_build_object('f', from_position::text, 't', to_position::text, 's', first_seen_at)
                       ORDER BY from_position), '[]')
               FROM ${names.q.gaps} WHERE resolved_at IS NULL AND from_position <= $1::int8) AS gaps`,
    [target.toString()],
  );
  const row = rows[0]!;
  return {
    head: BigInt(row.head),
    committed: row.committed,
    openGaps: row.gaps.map((g) => ({ from: BigInt(g.f), to: BigInt(g.t), since: new Date(g.s) })),
  };
}

/**
 * Whether `error` says a named statement was lost between server sessions: a pooler in transaction mode (PgBouncer)
 * runs each statement on any server session, where a statement prepared on another is unknown (26000) or, prepared
 * there by another client under the same name, already exists (42P05).
 */
export function lostPreparedStatement(error: unknown): boolean {
  const code = (error as { code?: string } | undefined)?.code;
  return code === '26000' || code === '42P05';
}
