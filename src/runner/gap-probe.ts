import type pg from 'pg';
import type { StoreNames } from '../db/identifiers.js';
import type { SequenceSample } from './gap-evidence-rules.js';
import { subtractRanges, type Decision, type HighWaterState, type Observation, type OpenGap, type WatchedGap } from './high-water.js';

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
 * and which watched positions have appeared. Splitting this into several statements under READ COMMITTED takes
 * several snapshots and can silently cross rows that committed in between.
 * `now` is clock_timestamp(), read after the snapshot was taken: an upper bound on when the gaps were visible.
 * The same statement samples the sequence for the gap evidence (gap-evidence-rules.ts).
 */
export async function readObservation(
  db: pg.ClientBase | pg.Pool,
  names: StoreNames,
  highWater: bigint,
  windowSize: number,
  watched: WatchedGap[],
): Promise<{ observation: Observation; sample: SequenceSample | undefined }> {
  const { rows } = await db.query<{
    now_ms: number;
    started_ms: number;
    last_value: string | null;
    head: string | null;
    first: string | null;
    last: string | null;
    holes: string[];
    late: string[];
  }>(
    `WITH win AS (
       SELECT global_position AS gp FROM ${names.q.events}
        WHERE global_position > $1 ORDER BY global_position LIMIT $2
     ), steps AS (
       SELECT gp, lead(gp) OVER (ORDER BY gp) AS nxt FROM win
     )
     SELECT (extract(epoch FROM clock_timestamp()) * 1000)::float8 AS now_ms,
            (extract(epoch FROM statement_timestamp()) * 1000)::float8 AS started_ms,
            pg_sequence_last_value(${names.q.sequenceLiteral})::text AS last_value,
            (SELECT max(global_position)::text FROM ${names.q.events}) AS head,
            (SELECT min(gp)::text FROM win) AS first,
            (SELECT max(gp)::text FROM win) AS last,
            (SELECT coalesce(array_agg((gp + 1)::text || '-' || (nxt - 1)::text ORDER BY gp), '{}')
               FROM steps WHERE nxt > gp + 1) AS holes,
            (SELECT coalesce(array_agg(e.global_position::text), '{}')
               FROM unnest($3::bigint[], $4::bigint[]) AS w(f, t)
               JOIN ${names.q.events} e ON e.global_position BETWEEN w.f AND w.t) AS late`,
    [highWater.toString(), windowSize, watched.map((w) => w.from.toString()), watched.map((w) => w.to.toString())],
  );
  const row = rows[0]!;
  return {
    observation: {
      now: row.now_ms,
      head: row.head === null ? null : BigInt(row.head),
      window:
        row.first === null ? null : { first: BigInt(row.first), last: BigInt(row.last!), holes: row.holes.map(range) },
      lateVisible: row.late.map(BigInt),
    },
    // statement_timestamp() precedes the read of the sequence: values above last_value were not handed out then.
    sample: row.last_value === null ? undefined : { at: row.started_ms, lastValue: BigInt(row.last_value) },
  };
}

/** The persisted state: H, open gaps (with their first sighting) and the given-up gaps still watched for late commits. */
export async function loadHighWaterState(
  db: pg.ClientBase | pg.Pool,
  names: StoreNames,
  lateWatchMs: number,
): Promise<HighWaterState> {
  const { rows } = await db.query<{ position: string; head: string; open: string[]; watched: string[]; late: string[] }>(
    `SELECT hw.position::text, hw.head::text,
            (SELECT coalesce(array_agg(from_position || '-' || to_position || '-' ||
                       (extract(epoch FROM first_seen_at) * 1000)::float8 ORDER BY from_position), '{}')
               FROM ${names.q.gaps} WHERE resolved_at IS NULL) AS open,
            (SELECT coalesce(array_agg(from_position || '-' || to_position || '-' ||
                       (extract(epoch FROM resolved_at) * 1000 + $1)::float8), '{}')
               FROM ${names.q.gaps}
              WHERE resolution IN ('timed_out', 'dead') AND resolved_at > now() - $1 * interval '1 millisecond') AS watched,
            (SELECT coalesce(array_agg(from_position::text), '{}')
               FROM ${names.q.gaps}
              WHERE resolution = 'late' AND resolved_at > now() - $1 * interval '1 millisecond') AS late
       FROM ${names.q.highWater} hw`,
    [lateWatchMs],
  );
  const row = rows[0]!;
  const openGaps: OpenGap[] = row.open.map((text) => {
    const [from, to, seen] = text.split('-');
    return { from: BigInt(from!), to: BigInt(to!), firstSeenAt: Number(seen) };
  });
  // Positions already recorded late are not watched again (a restart must not record them twice).
  const alreadyLate: Array<[bigint, bigint]> = row.late.map((p) => [BigInt(p), BigInt(p)]);
  alreadyLate.sort((a, b) => (a[0] < b[0] ? -1 : 1));
  const watched: WatchedGap[] = row.watched.flatMap((text) => {
    const [from, to, until] = text.split('-');
    return subtractRanges([BigInt(from!), BigInt(to!)], alreadyLate).map(([f, t]) => ({
      from: f,
      to: t,
      watchUntil: Number(until),
    }));
  });
  return { highWater: BigInt(row.position), head: BigInt(row.head), openGaps, watched };
}

const ts = (ms: number) => new Date(ms).toISOString();

/**
 * Writes a decision in one transaction: open gaps replaced by the current ones, resolutions and late positions
 * appended, H moved, and a NOTIFY that wakes the projectors of other instances (delivered on commit).
 */
export async function persistDecision(
  client: pg.ClientBase,
  names: StoreNames,
  decision: Decision,
  leader: string,
  gapsChanged: boolean,
): Promise<'saved' | 'not_leader'> {
  const { state } = decision;
  // The fence, H and the wake-up of other instances' projectors in one statement. A leader whose lease silently
  // lapsed (and was taken over) finds another name in the row: nothing is written and it stands down. Without gap
  // changes (the common case) it is the whole write, in one round trip.
  const moveHighWater = () =>
    client.query(
      `WITH moved AS (
         UPDATE ${names.q.highWater} SET position = $1, head = $2, updated_at = now() WHERE leader = $3 RETURNING position
       )
       SELECT pg_notify($4, position::text) FROM moved`,
      [state.highWater.toString(), state.head.toString(), leader, names.highWaterChannel],
    );
  if (!gapsChanged) return (await moveHighWater()).rowCount === 0 ? 'not_leader' : 'saved';
  await client.query('BEGIN');
  try {
    if ((await moveHighWater()).rowCount === 0) {
      await client.query('ROLLBACK');
      return 'not_leader';
    }
    await client.query(`DELETE FROM ${names.q.gaps} WHERE resolved_at IS NULL`);
    const rows = [
      ...state.openGaps.map((g) => [g.from, g.to, g.firstSeenAt, null, null] as const),
      ...decision.resolved.map((r) => [r.from, r.to, r.firstSeenAt, r.resolvedAt, r.resolution] as const),
      // A late row's times are the server's own: it was first seen and resolved by this very transaction.
      ...decision.late.map((p) => [p, p, null, null, 'late'] as const),
    ];
    if (rows.length > 0) {
      await client.query(
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
    await client.query('COMMIT');
    return 'saved';
  } catch (error) {
    await client.query('ROLLBACK').catch(() => {});
    throw error;
  }
}

export async function readPersistedHighWater(
  db: pg.ClientBase | pg.Pool,
  names: StoreNames,
): Promise<{ highWater: bigint; head: bigint; openGaps: number; oldestGapAgeSeconds: number }> {
  const { rows } = await db.query<{ position: string; head: string; open: number; oldest: number | null }>(
    `SELECT hw.position::text, hw.head::text,
            (SELECT count(*)::int FROM ${names.q.gaps} WHERE resolved_at IS NULL) AS open,
            (SELECT extract(epoch FROM now() - min(first_seen_at))::float8 FROM ${names.q.gaps} WHERE resolved_at IS NULL) AS oldest
       FROM ${names.q.highWater} hw`,
  );
  const row = rows[0]!;
  return { highWater: BigInt(row.position), head: BigInt(row.head), openGaps: row.open, oldestGapAgeSeconds: row.oldest ?? 0 };
}
