import type pg from 'pg';
import { withTransaction } from '../db/connection.js';
import type { StoreNames } from '../db/identifiers.js';
import { eventTable, positionSql } from '../sources/event-table.js';

/**
 * The SQL of housekeeping (housekeeping.ts): the audit of settled gaps and the pruning of the gap history. Every
 * statement is bounded by a chunk of gap rows and found through an index (migration 7), so its cost follows the
 * chunk, never the length of the history; none holds the high-water row lock except the short insert of what the
 * audit found.
 */

/**
 * The events visible inside the gap ranges of `gaps` (an alias of projection_gaps in the caller's FROM), above
 * `after` when given, that no late row records yet, the lowest `FOUND_CHUNK + 1` of them, as a text[] of positions:
 * one index probe of the position per gap range, driven from the gaps. Joining events to gaps instead let PostgreSQL
 * walk every event, then the gaps below it (66 s for a million events and a hundred gaps). Bounded: an operator's
 * bulk load into a gap range can put any number of rows there, and a statement that found (and recorded) them all
 * outlived its statement_timeout on every run; more than FOUND_CHUNK found means the gap is not done (the caller
 * records FOUND_CHUNK and goes on above the last, readFoundAfter). OFFSET 0 keeps the late check a probe of the late
 * index per event found: as an anti join under the LIMIT, PostgreSQL hashed every late row of the history once per
 * gap (11 s for 1,000 gaps and 30,000 late rows, against 40 ms probing).
 */
function unrecordedEventsSql(names: StoreNames, gaps: string, after?: string): string {
  const t = eventTable(names);
  const position = positionSql(t, 'e');
  return `(SELECT coalesce(array_agg(x.p::text ORDER BY x.p), '{}')
             FROM (SELECT ${position}::int8 AS p FROM ${t.table} e
                    WHERE ${position} BETWEEN ${gaps}.from_position AND ${gaps}.to_position${after ? ` AND ${position} > ${after}` : ''}
                      AND NOT EXISTS (SELECT 1 FROM ${names.q.gaps} l WHERE l.resolution = 'late' AND l.from_position = ${position} OFFSET 0)
                    ORDER BY ${position} LIMIT ${FOUND_CHUNK + 1}) x)`;
}

/** At most this many events found per gap and statement (unrecordedEventsSql), and recorded per transaction. */
export const FOUND_CHUNK = 1000;

/** A gap's found positions, cut to FOUND_CHUNK: `complete` when that is all of them. */
export interface Found {
  found: bigint[];
  complete: boolean;
}

function foundOf(text: string[]): Found {
  return { found: text.slice(0, FOUND_CHUNK).map(BigInt), complete: text.length <= FOUND_CHUNK };
}

export interface AuditChunk {
  /** The settled gaps looked into (their ids). */
  ids: bigint[];
  /** Events found inside them that no late row records: a writer outside the assumptions. */
  found: bigint[];
  /** The gaps with more found than FOUND_CHUNK: the audit goes on above `after` (readFoundAfter). */
  unfinished: Array<{ id: bigint; after: bigint }>;
}

/** Up to `limit` settled gaps whose audit is due, the oldest due first, and what they hold. Reads only. */
export async function readDueAudits(db: pg.ClientBase | pg.Pool, names: StoreNames, limit: number): Promise<AuditChunk> {
  const { rows } = await db.query<{ id: string; found: string[] }>(
    `SELECT g.id::text, ${unrecordedEventsSql(names, 'g')} AS found
       FROM (SELECT id, from_position, to_position FROM ${names.q.gaps}
              WHERE next_audit_at <= now() ORDER BY next_audit_at LIMIT $1) g`,
    [limit],
  );
  const gaps = rows.map((r) => ({ id: BigInt(r.id), ...foundOf(r.found) }));
  return {
    ids: gaps.map((g) => g.id),
    found: gaps.flatMap((g) => g.found),
    unfinished: gaps.filter((g) => !g.complete).map((g) => ({ id: g.id, after: g.found.at(-1)! })),
  };
}

/** The next events found inside the gap `id` above `after` (an unfinished audit: AuditChunk). Reads only. */
export async function readFoundAfter(db: pg.ClientBase | pg.Pool, names: StoreNames, id: bigint, after: bigint): Promise<Found> {
  const { rows } = await db.query<{ found: string[] }>(
    `SELECT ${unrecordedEventsSql(names, 'g', '$2::int8')} AS found FROM ${names.q.gaps} g WHERE g.id = $1`,
    [id.toString(), after.toString()],
  );
  return rows[0] ? foundOf(rows[0].found) : { found: [], complete: true };
}

/**
 * The audit of `ids` is done: the next one is due `delaysMs[audits]` after now (the delay after the audit with that
 * number, 1-based), or never (NULL) once the schedule is used up (auditDelays): only the audit before pruning is left.
 */
export async function markAudited(db: pg.ClientBase | pg.Pool, names: StoreNames, ids: bigint[], delaysMs: number[]): Promise<void> {
  if (ids.length === 0) return;
  await db.query(
    `UPDATE ${names.q.gaps}
        SET audits = audits + 1, next_audit_at = now() + ($2::float8[])[audits + 1] * interval '1 millisecond'
      WHERE id = ANY ($1::int8[])`,
    [ids.map(String), delaysMs],
  );
}

/** The gaps `ids` are audited again at the next run (events were found inside them when they were about to be pruned). */
export async function auditAgain(db: pg.ClientBase | pg.Pool, names: StoreNames, ids: bigint[]): Promise<void> {
  if (ids.length === 0) return;
  await db.query(`UPDATE ${names.q.gaps} SET next_audit_at = now() WHERE id = ANY ($1::int8[])`, [ids.map(String)]);
}

/**
 * Records `positions` (found inside settled gaps) late, so every projection that passed them gets them. Late rows
 * must commit in id order for the projectors' late_seen_id (a lower id committed after a higher one would be missed),
 * and persistDecision writes its late rows under the high-water row lock: this short transaction takes the same lock
 * first, then inserts (a statement of its own, so its snapshot sees whatever committed while it waited). Only the
 * leader writes. At most FOUND_CHUNK positions per call (the caller cuts them, lowest first): the lock is held for a
 * bounded insert. Returns the positions recorded now.
 */
export async function recordFoundLate(db: pg.Pool, names: StoreNames, leader: string, positions: bigint[]): Promise<bigint[]> {
  if (positions.length === 0) return [];
  return withTransaction(db, async (tx) => {
    const locked = await tx.query(`UPDATE ${names.q.highWater} SET leader = leader WHERE leader = $1`, [leader]);
    if (locked.rowCount === 0) return [];
    const { rows } = await tx.query<{ position: string }>(
      `INSERT INTO ${names.q.gaps} (from_position, to_position, first_seen_at, resolved_at, resolution)
       SELECT p, p, now(), now(), 'late' FROM unnest($1::int8[]) AS p
        WHERE NOT EXISTS (SELECT 1 FROM ${names.q.gaps} l WHERE l.resolution = 'late' AND l.from_position = p)
       RETURNING from_position::text AS position`,
      [positions.map(String)],
    );
    return rows.map((r) => BigInt(r.position));
  });
}

const older = (param: string) => `now() - ${param} * interval '1 millisecond'`;

export interface PruneChunk {
  /**
   * Settled gaps past the history that nothing needs any more, with the events found inside them (the last audit; at
   * most FOUND_CHUNK each: a gap with any found stays, and is audited again at the next run, auditAgain).
   */
  gaps: Array<{ id: bigint; found: bigint[] }>;
}

/**
 * Up to `limit` settled gaps older than `historyMs` that may leave: no late record inside them that a projection has
 * not dealt with (late_seen_id) or that is itself younger than the history. Each comes with its last audit.
 */
export async function readPrunable(db: pg.ClientBase | pg.Pool, names: StoreNames, historyMs: number, limit: number): Promise<PruneChunk> {
  const { rows } = await db.query<{ id: string; found: string[] }>(
    `WITH horizon AS (
       SELECT coalesce(min(late_seen_id), 0) AS seen FROM ${names.q.checkpoints}
     )
     SELECT g.id::text, ${unrecordedEventsSql(names, 'g')} AS found
       FROM ${names.q.gaps} g, horizon h
      WHERE g.resolution IN ('timed_out', 'dead') AND g.settled_at IS NOT NULL AND g.settled_at < ${older('$1')}
        AND NOT EXISTS (SELECT 1 FROM ${names.q.gaps} l
                         WHERE l.resolution = 'late' AND l.from_position BETWEEN g.from_position AND g.to_position
                           AND (l.id > h.seen OR l.resolved_at >= ${older('$1')}))
      ORDER BY g.settled_at LIMIT $2`,
    [historyMs, limit],
  );
  return { gaps: rows.map((r) => ({ id: BigInt(r.id), found: foundOf(r.found).found })) };
}

/**
 * Removes the settled gaps `ids` with their late records, their skipped-position and late-delivery records (each
 * found by position through its index), in one statement. Returns the gap rows removed.
 */
export async function pruneGaps(db: pg.ClientBase | pg.Pool, names: StoreNames, ids: bigint[]): Promise<number> {
  if (ids.length === 0) return 0;
  const { rows } = await db.query<{ removed: number }>(
    `WITH doomed AS (
       SELECT id, from_position AS f, to_position AS t FROM ${names.q.gaps} WHERE id = ANY ($1::int8[])
     ), late AS (
       DELETE FROM ${names.q.gaps} l USING doomed d
        WHERE l.resolution = 'late' AND l.from_position BETWEEN d.f AND d.t RETURNING l.id
     ), skipped AS (
       DELETE FROM ${names.q.skippedPositions} s USING doomed d
        WHERE s.from_position BETWEEN d.f AND d.t AND s.to_position <= d.t RETURNING 1
     ), delivered AS (
       DELETE FROM ${names.q.lateDeliveries} x USING doomed d WHERE x.position BETWEEN d.f AND d.t RETURNING 1
     ), given_up AS (
       DELETE FROM ${names.q.gaps} g USING doomed d WHERE g.id = d.id RETURNING g.id
     )
     -- Data-modifying CTEs run to completion whether read or not (skipped, delivered included).
     SELECT ((SELECT count(*) FROM late) + (SELECT count(*) FROM given_up))::int AS removed`,
    [ids.map(String)],
  );
  return rows[0]!.removed;
}

/** Removes up to `limit` filled gaps older than `historyMs`. Returns how many. */
export async function pruneFilled(db: pg.ClientBase | pg.Pool, names: StoreNames, historyMs: number, limit: number): Promise<number> {
  const { rowCount } = await db.query(
    `DELETE FROM ${names.q.gaps} WHERE id IN (
       SELECT id FROM ${names.q.gaps} WHERE resolution = 'filled' AND resolved_at < ${older('$1')} LIMIT $2)`,
    [historyMs, limit],
  );
  return rowCount ?? 0;
}

/** What housekeeping has left: audits due now, gap rows past the history (including those still needed). */
export async function readBacklog(
  db: pg.ClientBase | pg.Pool,
  names: StoreNames,
  historyMs: number,
): Promise<{ audit: number; prune: number }> {
  const { rows } = await db.query<{ audit: number; prune: number }>(
    `SELECT (SELECT count(*) FROM ${names.q.gaps} WHERE next_audit_at <= now())::int AS audit,
            ((SELECT count(*) FROM ${names.q.gaps}
               WHERE resolution IN ('timed_out', 'dead') AND settled_at IS NOT NULL AND settled_at < ${older('$1')})
             + (SELECT count(*) FROM ${names.q.gaps} WHERE resolution = 'filled' AND resolved_at < ${older('$1')}))::int AS prune`,
    [historyMs],
  );
  return rows[0]!;
}
