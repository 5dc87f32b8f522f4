import type pg from 'pg';
import { withTransaction } from '../db/connection.js';
import { NotLeaderError } from '../errors.js';
import type { StoreNames } from '../db/identifiers.js';
import { preparedStatement } from '../db/prepared.js';
import type { SequenceSample } from './evidence-rules.js';
import { eventTable, positionSql } from '../sources/event-table.js';
import {
  subtractRanges,
  type Decision,
  type Fence,
  type HighWaterState,
  type Observation,
  type OpenGap,
  type WatchedGap,
} from './decisions.js';

/**
 * The SQL side of the high-water tracker: read an observation, load and persist the tracker's state. The decision
 * logic is in high-water.ts.
 */

const range = (text: string): [bigint, bigint] => {
  const [from, to] = text.split('-');
  return [BigInt(from!), BigInt(to!)];
};

/**
 * One statement, therefore one snapshot: the visible positions above H (as first/last/holes of a window), the head,
 * which watched positions have appeared, and the snapshot's own xmin (pg_current_snapshot() is the statement's
 * snapshot: whatever it says is ended is ended *in the snapshot that did not see the rows*, which is what settling
 * needs). Splitting this into several statements under READ COMMITTED takes several snapshots and can silently cross
 * rows that committed in between.
 * `now` is clock_timestamp(), read after the snapshot was taken: an upper bound on when the gaps were visible.
 * With `sequence` (a regclass literal: the sequence found behind the source's position column, evidence.ts) the same
 * statement samples it for the gap evidence (gap-evidence-rules.ts); it needs SELECT or USAGE on the sequence, which
 * a least-privilege role may lack (then H still moves, without samples).
 * Every position counts here, including rows a source does not deliver (its filter): a position left out would be a gap.
 *
 * With `move` (the tracker has no open gap), the same statement also persists the common pass: when the positions
 * visible right above H run on without a hole and none is a late commit, it moves H to the last of them (and the
 * head), leader-checked like persistDecision, with its NOTIFY. That is H's own definition (committed positions,
 * seen in this snapshot), so it is right whatever the pure decision adds; the tracker still decides with `observe`
 * and writes what this did not (movedTo says what it did: see writtenByObservation). It takes the second round trip
 * off the path of every event: commit -> NOTIFY -> this statement -> projectors.
 * Named (prepared once per session): planning its CTEs cost more than running them, on every pass.
 */
export async function readObservation(
  db: pg.ClientBase | pg.Pool,
  names: StoreNames,
  highWater: bigint,
  windowSize: number,
  watched: WatchedGap[],
  sequence: string | undefined,
  move?: { leader: string },
): Promise<{ observation: Observation; sample: SequenceSample | undefined; movedTo: bigint | undefined; waited: Waited | undefined }> {
  const text = observationSql(names, sequence);
  const { rows } = await db.query<{
    now_ms: number;
    started_ms: number;
    last_value: string | null;
    xmin: string;
    head: string | null;
    first: string | null;
    last: string | null;
    holes: string[];
    late: string[];
    moved_to: string | null;
    waited: string | null;
  }>({
    name: preparedStatement(text).name,
    text,
    values: [
      highWater.toString(),
      windowSize,
      watched.map((w) => w.from.toString()),
      watched.map((w) => w.to.toString()),
      move?.leader ?? null,
      names.highWaterChannel,
    ],
  });
  const row = rows[0]!;
  return {
    observation: {
      now: row.now_ms,
      head: row.head === null ? null : BigInt(row.head),
      window: row.first === null ? null : { first: BigInt(row.first), last: BigInt(row.last!), holes: row.holes.map(range) },
      lateVisible: row.late.map(BigInt),
      xmin: BigInt(row.xmin),
    },
    // statement_timestamp() precedes the read of the sequence: values above last_value were not handed out then.
    sample: row.last_value === null ? undefined : { at: row.started_ms, lastValue: BigInt(row.last_value) },
    movedTo: row.moved_to === null ? undefined : BigInt(row.moved_to),
    waited: parseWaited(row.waited),
  };
}

/** The highest position a waiter waits for (src/wait/), and how long that stays true unless a waiter renews it. */
export interface Waited {
  position: bigint;
  remainingMs: number;
}

/** What `names.q.waited()` says (migration 13): `position/remaining ms`, or NULL when no wait is pending. */
function parseWaited(text: string | null): Waited | undefined {
  if (text === null) return undefined;
  const [position, remaining] = text.split('/');
  return { position: BigInt(position!), remainingMs: Number(remaining) };
}

/** readObservation's statement: $1 H, $2 window, $3/$4 watched ranges, $5 the leader moving H (or NULL), $6 channel. */
function observationSql(names: StoreNames, sequence: string | undefined): string {
  const t = eventTable(names);
  const position = positionSql(t, 'e');
  return `WITH win AS (
       SELECT ${position}::int8 AS gp FROM ${t.table} e
        WHERE ${position} > $1 ORDER BY ${position} LIMIT $2
     ), steps AS (
       SELECT gp, lead(gp) OVER (ORDER BY gp) AS nxt FROM win
     ), seen AS (
       SELECT (SELECT max(${position})::int8 FROM ${t.table} e) AS head,
              (SELECT min(gp) FROM win) AS first,
              (SELECT max(gp) FROM win) AS last,
              (SELECT coalesce(array_agg((gp + 1)::text || '-' || (nxt - 1)::text ORDER BY gp), '{}')
                 FROM steps WHERE nxt > gp + 1) AS holes,
              (SELECT coalesce(array_agg(${position}::text), '{}')
                 FROM unnest($3::bigint[], $4::bigint[]) AS w(f, t)
                 JOIN ${t.table} e ON ${position} BETWEEN w.f AND w.t) AS late
     ), moved AS (
       -- The common pass persisted here (see readObservation): a run without holes right above H, no late commit.
       UPDATE ${names.q.highWater} hw SET position = s.last, head = greatest(hw.head, s.head), updated_at = now()
         FROM seen s
        WHERE $5::text IS NOT NULL AND hw.leader = $5::text AND hw.position = $1::int8
          AND s.first = $1::int8 + 1 AND s.holes = '{}' AND s.late = '{}'
       RETURNING hw.position
     ), notified AS (
       SELECT position, pg_notify($6::text, position::text) FROM moved
     )
     SELECT (extract(epoch FROM clock_timestamp()) * 1000)::float8 AS now_ms,
            (extract(epoch FROM statement_timestamp()) * 1000)::float8 AS started_ms,
            -- A sequence never called has no last value: nothing handed out yet (positions start at 1).
            ${sequence ? `coalesce(pg_sequence_last_value(${sequence}), 0)::text` : 'NULL::text'} AS last_value,
            pg_snapshot_xmin(pg_current_snapshot())::text AS xmin,
            s.head::text, s.first::text, s.last::text, s.holes, s.late,
            (SELECT position::text FROM notified) AS moved_to,
            -- Whether a wait is pending (src/wait/): projectors then write the moves it needs (projector/deferral.ts).
            ${names.q.waited}() AS waited
       FROM seen s`;
}

/**
 * A fence for settling (high-water.ts): a new transaction id, higher than the xid of every transaction that took a
 * position before this call. `at` is the statement's start, a lower bound on when the xid was assigned.
 * It costs one xid and a commit record, once per pass while a given-up gap waits for its fence.
 */
export async function takeFence(db: pg.ClientBase | pg.Pool, names: StoreNames): Promise<Fence> {
  const t = eventTable(names);
  if (t.native) {
    const { rows } = await db.query<{ xid: string; at: number }>(
      `SELECT pg_current_xact_id()::text AS xid, (extract(epoch FROM statement_timestamp()) * 1000)::float8 AS at`,
    );
    return { xid: BigInt(rows[0]!.xid), at: rows[0]!.at };
  }
  // A foreign table (decisions.ts): its writers without an xid, read in one look at the lock table, before the xid:
  // the CASE reads the row of the subquery first. A writer that held the table's RowExclusiveLock and an xid then
  // got that xid before this one; one whose xid lock is not seen yet is listed (it only waits longer).
  const { rows } = await db.query<{ xid: string; at: number; writers: string[] }>(
    `WITH locks AS MATERIALIZED (SELECT * FROM pg_catalog.pg_locks)
     SELECT CASE WHEN w.writers IS NOT NULL THEN pg_current_xact_id() END::text AS xid, w.writers,
            (extract(epoch FROM statement_timestamp()) * 1000)::float8 AS at
       FROM (SELECT coalesce(array_agg(DISTINCT l.virtualtransaction), '{}') AS writers
               FROM locks l
              WHERE l.locktype = 'relation' AND l.mode = 'RowExclusiveLock' AND l.granted
                AND l.database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database())
                -- pg_partition_tree has no row for a table that is not partitioned
                AND (l.relation = $1::regclass OR l.relation IN (SELECT relid FROM pg_catalog.pg_partition_tree($1::regclass)))
                AND l.pid IS DISTINCT FROM pg_backend_pid()
                AND NOT EXISTS (SELECT 1 FROM locks x
                                 WHERE x.locktype = 'transactionid' AND x.mode = 'ExclusiveLock' AND x.granted
                                   AND x.virtualtransaction = l.virtualtransaction)) w`,
    [t.table],
  );
  return { xid: BigInt(rows[0]!.xid), at: rows[0]!.at, writers: rows[0]!.writers };
}

/** Which of `writers` (virtual xids) are still running: each holds the lock on its own until it ends. */
export async function runningWriters(db: pg.ClientBase | pg.Pool, writers: string[]): Promise<Set<string>> {
  const { rows } = await db.query<{ running: string[] }>(
    `SELECT coalesce(array_agg(virtualxid), '{}') AS running FROM pg_catalog.pg_locks
      WHERE locktype = 'virtualxid' AND virtualxid = ANY($1::text[])`,
    [writers],
  );
  return new Set(rows[0]!.running);
}

/**
 * The persisted state: H, open gaps (with their first sighting) and the given-up gaps not yet settled, less the
 * positions already recorded late in them (a restart must not record them twice). No time window: a gap given up a
 * month ago that is still unsettled is still watched.
 */
export async function loadHighWaterState(db: pg.ClientBase | pg.Pool, names: StoreNames): Promise<HighWaterState> {
  const { rows } = await db.query<{ position: string; head: string; open: string[]; watched: string[] }>(
    `SELECT hw.position::text, hw.head::text,
            (SELECT coalesce(array_agg(from_position || '/' || to_position || '/' ||
                       (extract(epoch FROM first_seen_at) * 1000)::float8 ORDER BY from_position), '{}')
               FROM ${names.q.gaps} WHERE resolved_at IS NULL) AS open,
            (SELECT coalesce(array_agg(g.from_position || '/' || g.to_position || '/' ||
                       (extract(epoch FROM g.first_seen_at) * 1000)::float8 || '/' || coalesce(g.fence_xid::text, '') || '/' ||
                       coalesce((SELECT string_agg(l.from_position::text, ',') FROM ${names.q.gaps} l
                                  WHERE l.resolution = 'late' AND l.from_position BETWEEN g.from_position AND g.to_position), '')
                       ORDER BY g.from_position), '{}')
               FROM ${names.q.gaps} g
              WHERE g.resolution IN ('timed_out', 'dead') AND g.settled_at IS NULL) AS watched
       FROM ${names.q.highWater} hw`,
  );
  const row = rows[0]!;
  const openGaps: OpenGap[] = row.open.map((text) => {
    const [from, to, seen] = text.split('/');
    return { from: BigInt(from!), to: BigInt(to!), firstSeenAt: Number(seen) };
  });
  const watched: WatchedGap[] = row.watched.flatMap((text) => {
    const [from, to, seen, fence, late] = text.split('/');
    const alreadyLate = late ? late.split(',').map((p): [bigint, bigint] => [BigInt(p), BigInt(p)]) : [];
    alreadyLate.sort((a, b) => (a[0] < b[0] ? -1 : 1));
    return subtractRanges([BigInt(from!), BigInt(to!)], alreadyLate).map(([f, t]) => ({
      from: f,
      to: t,
      firstSeenAt: Number(seen),
      fence: fence ? BigInt(fence) : null,
    }));
  });
  return { highWater: BigInt(row.position), head: BigInt(row.head), openGaps, watched };
}

const ts = (ms: number) => new Date(ms).toISOString();

/**
 * Writes a decision in one transaction: open gaps replaced by the current ones, resolutions and late positions
 * appended, fences and settlements marked on the given-up rows, H moved, and a NOTIFY that wakes the projectors of
 * other instances (delivered on commit).
 */
export async function persistDecision(
  db: pg.Pool | pg.ClientBase,
  names: StoreNames,
  decision: Decision,
  leader: string,
): Promise<'saved' | 'not_leader'> {
  const { state } = decision;
  const gapsChanged =
    decision.opened.length + decision.resolved.length + decision.late.length + decision.fenced.length + decision.settled.length > 0;
  // The fence, H and the wake-up of other instances' projectors in one statement. A leader whose lease silently
  // lapsed (and was taken over) finds another name in the row: nothing is written and it stands down. Without gap
  // changes (the common case) it is the whole write, in one round trip.
  const moveHighWater = (q: pg.Pool | pg.ClientBase) =>
    q.query(
      `WITH moved AS (
         UPDATE ${names.q.highWater} SET position = $1, head = $2, updated_at = now() WHERE leader = $3 RETURNING position
       )
       SELECT pg_notify($4, position::text) FROM moved`,
      [state.highWater.toString(), state.head.toString(), leader, names.highWaterChannel],
    );
  if (!gapsChanged) return (await moveHighWater(db)).rowCount === 0 ? 'not_leader' : 'saved';
  return withTransaction(db, async (tx) => {
    if ((await moveHighWater(tx)).rowCount === 0) throw new NotLeaderError();
    await tx.query(`DELETE FROM ${names.q.gaps} WHERE resolved_at IS NULL`);
    const rows = [
      ...state.openGaps.map((g) => [g.from, g.to, g.firstSeenAt, null, null] as const),
      ...decision.resolved.map((r) => [r.from, r.to, r.firstSeenAt, r.resolvedAt, r.resolution] as const),
      // A late row's times are the server's own: it was first seen and resolved by this very transaction.
      ...decision.late.map((p) => [p, p, null, null, 'late'] as const),
    ];
    if (rows.length > 0) {
      await tx.query(
        `INSERT INTO ${names.q.gaps} (from_position, to_position, first_seen_at, resolved_at, resolution)
         SELECT f, t, coalesce(s, now()), CASE WHEN res = 'late' THEN now() ELSE r END, res
           FROM unnest($1::bigint[], $2::bigint[], $3::timestamptz[], $4::timestamptz[], $5::text[]) AS u(f, t, s, r, res)`,
        [
          rows.map((r) => r[0].toString()),
          rows.map((r) => r[1].toString()),
          rows.map((r) => (r[2] === null ? null : ts(r[2]))),
          rows.map((r) => (r[3] === null ? null : ts(r[3]))),
          rows.map((r) => r[4]),
        ],
      );
    }
    // A given-up row whose every position has now committed late has nothing left to watch: settled (so that the
    // history pruning can remove it one day; the watch itself already let go of it).
    if (decision.late.length > 0) {
      await tx.query(
        `UPDATE ${names.q.gaps} g SET settled_at = now(), next_audit_at = now()
          WHERE g.resolution IN ('timed_out', 'dead') AND g.settled_at IS NULL
            AND EXISTS (SELECT 1 FROM unnest($1::bigint[]) AS p WHERE p BETWEEN g.from_position AND g.to_position)
            AND (SELECT count(DISTINCT l.from_position) FROM ${names.q.gaps} l
                  WHERE l.resolution = 'late' AND l.from_position BETWEEN g.from_position AND g.to_position)
                = g.to_position - g.from_position + 1`,
        [decision.late.map(String)],
      );
    }
    // Fences and settlements, on the given-up rows that contain the (possibly split) watched ranges.
    const marks = [
      ...decision.fenced.map((w) => [w.from, w.to, w.fence, false] as const),
      ...decision.settled.map((w) => [w.from, w.to, w.fence, true] as const),
    ];
    if (marks.length > 0) {
      await tx.query(
        // One source row per gap row (UPDATE … FROM applies an arbitrary one of several): a gap fenced and settled
        // in the same pass, or split into pieces by late positions, is folded first.
        `UPDATE ${names.q.gaps} g
            SET fence_xid = coalesce(g.fence_xid, m.fence),
                settled_at = CASE WHEN m.settled THEN coalesce(g.settled_at, now()) ELSE g.settled_at END,
                -- Settled now: its first audit is due (housekeeping.ts schedules the next ones).
                next_audit_at = CASE WHEN m.settled AND g.settled_at IS NULL THEN now() ELSE g.next_audit_at END
           FROM (SELECT r.id, max(u.fence) AS fence, bool_or(u.settled) AS settled
                   FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::boolean[]) AS u(f, t, fence, settled)
                   JOIN ${names.q.gaps} r
                     ON r.resolution IN ('timed_out', 'dead') AND r.from_position <= u.f AND r.to_position >= u.t
                  GROUP BY r.id) m
          WHERE g.id = m.id`,
        [
          marks.map((m) => m[0].toString()),
          marks.map((m) => m[1].toString()),
          marks.map((m) => (m[2] === null ? null : m[2].toString())),
          marks.map((m) => m[3]),
        ],
      );
    }
    return 'saved' as const;
  }).catch((error: unknown) => {
    if (error instanceof NotLeaderError) return 'not_leader' as const;
    throw error;
  });
}

export async function readPersistedHighWater(
  db: pg.ClientBase | pg.Pool,
  names: StoreNames,
): Promise<{ highWater: bigint; head: bigint; openGaps: number; oldestGapAgeSeconds: number; waited: Waited | undefined }> {
  const { rows } = await db.query<{ position: string; head: string; open: number; oldest: number | null; waited: string | null }>(
    `SELECT hw.position::text, hw.head::text, ${names.q.waited}() AS waited,
            (SELECT count(*)::int FROM ${names.q.gaps} WHERE resolved_at IS NULL) AS open,
            (SELECT extract(epoch FROM now() - min(first_seen_at))::float8 FROM ${names.q.gaps} WHERE resolved_at IS NULL) AS oldest
       FROM ${names.q.highWater} hw`,
  );
  const row = rows[0]!;
  return {
    highWater: BigInt(row.position),
    head: BigInt(row.head),
    openGaps: row.open,
    oldestGapAgeSeconds: row.oldest ?? 0,
    waited: parseWaited(row.waited),
  };
}
