import type pg from 'pg';
import { OldSnapshotsError } from '../errors.js';
import { sleep } from '../shared/time.js';
import type { GuardedRelation } from './builds.js';

/**
 * What a switch waits for, each bounded by SWITCH_LOCK_TIMEOUT_MS and none of it while holding a lock a reader would
 * queue behind: the transactions whose snapshot predates the new version's data to end (awaitNewerSnapshots), then
 * the read names, all at once, without queueing (lockAll). Past the budget the switch is postponed (rolled back, the
 * reason recorded) and tried again after the next batch.
 */

/**
 * How long a switch tries for what it needs before it gives up and is tried again after the next batch: each wait for
 * a builds row (a batch of either build in flight), the wait for older snapshots, and the budget for taking all the
 * read names at once NOWAIT (an application transaction reading them).
 */
export const SWITCH_LOCK_TIMEOUT_MS = 500;

/**
 * Other sessions of this database that may hold a snapshot taken before `$1` (a time after the new version's last
 * commit before the switch): a snapshot held (backend_xmin) in a transaction that began before then, or whose start
 * is hidden from us (a role without pg_read_all_stats). Such a transaction, under REPEATABLE READ or SERIALIZABLE,
 * may resolve the read names only after the switch, to the new version's tables, and read them with its old snapshot:
 * empty or partly built. A session waiting for this switch's own locks (a batch of the live version at the builds
 * row) is left out: it waits for the switch, and stops before reading once it is over (BuildRetiredError).
 *
 * Compared by time rather than by transaction ids: the switch's own transaction id, older than the new version's last
 * commits, holds every other snapshot's xmin below them for as long as it runs, so no xmin could ever pass them.
 */
const OLDER_SNAPSHOTS_SQL = `
  SELECT a.pid, a.xact_start::text AS since
    FROM pg_stat_activity a
   WHERE a.datid = (SELECT oid FROM pg_database WHERE datname = current_database())
     AND a.pid <> pg_backend_pid()
     AND coalesce(a.backend_type, 'client backend') = 'client backend'
     AND a.backend_xmin IS NOT NULL
     AND (a.xact_start IS NULL OR a.xact_start < $1::timestamptz)
     AND NOT pg_backend_pid() = ANY (pg_blocking_pids(a.pid))
   ORDER BY a.xact_start NULLS FIRST, a.pid`;

/**
 * The time after which every snapshot taken sees the new version's data as the switch leaves it: read once that
 * data is final (the new version caught up, in transactions of their own, now committed), on the server's clock,
 * the one pg_stat_activity's xact_start is read from.
 */
export async function snapshotHorizon(tx: pg.ClientBase): Promise<string> {
  return (await tx.query<{ now: string }>('SELECT clock_timestamp()::text AS now')).rows[0]!.now;
}

/**
 * Waits, polling every few milliseconds within SWITCH_LOCK_TIMEOUT_MS, until no other session holds a snapshot that
 * may be older than `horizon` (OLDER_SNAPSHOTS_SQL); past the budget, OldSnapshotsError names them.
 */
export async function awaitNewerSnapshots(tx: pg.ClientBase, projection: string, horizon: string): Promise<void> {
  const deadline = Date.now() + SWITCH_LOCK_TIMEOUT_MS;
  for (;;) {
    const { rows } = await tx.query<{ pid: number; since: string | null }>(OLDER_SNAPSHOTS_SQL, [horizon]);
    if (rows.length === 0) return;
    if (Date.now() > deadline) throw new OldSnapshotsError(projection, rows);
    await sleep(5);
  }
}

/**
 * The relations the switch changes, taken ACCESS EXCLUSIVE all at once and without queueing, tried again every few
 * milliseconds within SWITCH_LOCK_TIMEOUT_MS: a reader never waits behind a switch that is itself waiting (lock_timeout
 * bounds each wait, not their sum, and readers queue behind a waiting lock). Then the DDL waits for nothing. Past the
 * budget: 55P03, the switch is postponed.
 *
 * Tables and views (`locks`) with LOCK TABLE … NOWAIT. PostgreSQL refuses LOCK on materialized views, sequences and
 * foreign tables (`guarded`): each is taken by a statement that changes nothing (ALTER … OWNER TO its owner), tried
 * only when pg_locks shows no other session holding or awaiting a lock on it, under a lock_timeout of 1 ms, the
 * least PostgreSQL has: a reader arriving in the instant between the look and the statement waits at most that.
 */
export async function lockAll(tx: pg.ClientBase, relations: string[], guarded: GuardedRelation[] = []): Promise<void> {
  if (relations.length === 0 && guarded.length === 0) return;
  const deadline = Date.now() + SWITCH_LOCK_TIMEOUT_MS;
  for (;;) {
    await tx.query('SAVEPOINT pr_switch_locks');
    try {
      if (relations.length > 0) await tx.query(`LOCK TABLE ${relations.join(', ')} IN ACCESS EXCLUSIVE MODE NOWAIT`);
      await takeGuarded(tx, guarded);
      await tx.query('RELEASE SAVEPOINT pr_switch_locks');
      return;
    } catch (error) {
      await tx.query('ROLLBACK TO SAVEPOINT pr_switch_locks');
      if ((error as { code?: string }).code !== '55P03' || Date.now() > deadline) throw error;
      await sleep(5);
    }
  }
}

/** The guarded relations of lockAll, in its savepoint: 55P03 when one is in use (its lock_timeout rolls back with it). */
async function takeGuarded(tx: pg.ClientBase, guarded: GuardedRelation[]): Promise<void> {
  if (guarded.length === 0) return;
  const { rows } = await tx.query<{ relation: string; owner: string; busy: boolean }>(
    `SELECT g.relation, quote_ident(pg_get_userbyid(c.relowner)) AS owner,
            EXISTS (SELECT 1 FROM pg_locks l
                     WHERE l.locktype = 'relation' AND l.relation = c.oid AND l.pid IS DISTINCT FROM pg_backend_pid()
                       AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())) AS busy
       FROM unnest($1::text[]) AS g(relation) JOIN pg_class c ON c.oid = g.relation::regclass`,
    [guarded.map((g) => g.relation)],
  );
  const busy = rows.find((r) => r.busy);
  if (busy) throw Object.assign(new Error(`could not obtain lock on relation ${busy.relation}: in use`), { code: '55P03' });
  await tx.query(`SET LOCAL lock_timeout = 1`);
  for (const { relation, alter } of guarded) {
    await tx.query(`ALTER ${alter} ${relation} OWNER TO ${rows.find((r) => r.relation === relation)!.owner}`);
  }
  await tx.query(`SET LOCAL lock_timeout = ${SWITCH_LOCK_TIMEOUT_MS}`);
}
