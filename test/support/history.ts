import type pg from 'pg';

/**
 * A store with a history, built set-wise in the shape the runner writes it (issue 25): events with one-position holes
 * spread over the history, each hole a settled dead gap (fenced, settled, its first audit due or done), every
 * projection past all of it with the skipped-position rows a projection records when it passes a given-up gap, and
 * one gap in a hundred filled late (its event, its late row, a late delivery per projection, all dealt with).
 * The gaps settled `expiredGaps` first (lowest positions) are older than the history window (8 days); the others
 * settled within it (spread over the last `windowHours`).
 */
export interface HistoryShape {
  events: number;
  settledGaps: number;
  expiredGaps?: number;
  projections: string[];
  /** The scheduled audits of the gaps in the window are due now (an upgrade's backlog) or done (a steady store). */
  auditsDue: boolean;
  windowHours?: number;
}

export interface History {
  /** The highest position: H, the head, every checkpoint. */
  head: number;
  /** The positions of the settled gaps (no event there unless late), lowest first. */
  gapPositions: number[];
}

export async function buildHistory(pool: pg.Pool, shape: HistoryShape): Promise<History> {
  const expired = shape.expiredGaps ?? 0;
  const holes = shape.settledGaps + expired;
  const head = shape.events + holes;
  // Hole k (1-based) sits at k * stride: spread evenly, the first `expired` of them the oldest.
  const stride = Math.max(2, Math.floor(head / Math.max(1, holes)));
  const windowHours = shape.windowHours ?? 24 * 6;
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    await client.query(`SET LOCAL projection_runner.notify = 'off'`);
    await client.query(
      `INSERT INTO events (global_position, stream_name, stream_position, type, data)
       SELECT p, 'history-' || (p % 1000), p / 1000 + 1, 'E', '{}'
         FROM generate_series(1, $1::int8) AS p
        WHERE NOT (p % $2 = 0 AND p / $2 <= $3)`,
      [head, stride, holes],
    );
    await client.query(`SELECT setval('events_global_position_seq', $1::int8)`, [head]);
    // Gap k: settled 8 days ago (expired) or within the window; one in a hundred got its event late (k % 100 = 0).
    await client.query(
      `INSERT INTO projection_gaps (from_position, to_position, first_seen_at, resolved_at, resolution, fence_xid,
                                    settled_at, audits, next_audit_at)
       SELECT k * $1, k * $1, s - interval '2 seconds', s - interval '1 second', 'dead', 1000, s,
              CASE WHEN $4 THEN 0 ELSE 5 END, CASE WHEN $4 THEN now() END
         FROM generate_series(1, $2::int8) AS k,
              LATERAL (SELECT CASE WHEN k <= $3 THEN now() - interval '8 days'
                                   ELSE now() - ($5::float8 * (k - $3) / greatest(1, $2 - $3)) * interval '1 hour' END AS s) t
        ORDER BY k`,
      [stride, holes, expired, shape.auditsDue, windowHours],
    );
    await client.query(
      `INSERT INTO events (global_position, stream_name, stream_position, type, data)
       SELECT k * $1, 'late-' || k, 1, 'E', '{}' FROM generate_series(100, $2::int8, 100) AS k`,
      [stride, holes],
    );
    await client.query(
      `INSERT INTO projection_gaps (from_position, to_position, first_seen_at, resolved_at, resolution)
       SELECT from_position, from_position, settled_at, settled_at, 'late' FROM projection_gaps
        WHERE resolution = 'dead' AND (from_position / $1) % 100 = 0 ORDER BY from_position`,
      [stride],
    );
    await client.query(`UPDATE projection_high_water SET position = $1, head = $1`, [head]);
    await client.query(
      `INSERT INTO projection_checkpoints (name, position, late_seen_id)
       SELECT n, $2, (SELECT coalesce(max(id), 0) FROM projection_gaps WHERE resolution = 'late') FROM unnest($1::text[]) AS n`,
      [shape.projections, head],
    );
    await client.query(
      `INSERT INTO projection_skipped_positions (projection, from_position, to_position)
       SELECT n, g.from_position, g.to_position FROM unnest($1::text[]) AS n, projection_gaps g WHERE g.resolution = 'dead'`,
      [shape.projections],
    );
    await client.query(
      `INSERT INTO projection_late_deliveries (projection, position)
       SELECT n, l.from_position FROM unnest($1::text[]) AS n, projection_gaps l WHERE l.resolution = 'late'`,
      [shape.projections],
    );
    await client.query('COMMIT');
  } catch (error) {
    await client.query('ROLLBACK');
    throw error;
  } finally {
    client.release();
  }
  await pool.query('ANALYZE events, projection_gaps, projection_skipped_positions, projection_late_deliveries');
  return { head, gapPositions: Array.from({ length: holes }, (_, k) => (k + 1) * stride) };
}
