import type pg from 'pg';
import type { StoreNames } from '../db/identifiers.js';
import { fitIdentifier, quoteIdentifier } from '../db/identifiers.js';
import { migrate, type MigrationReport } from '../db/migrate.js';
import { notifyFunctionBody, notifyTriggerSql, type NotifyTarget } from '../db/notify-trigger.js';
import { withShortLocks as withShortLockWaits } from '../db/short-locks.js';
import { withSessionLock } from '../db/session-lock.js';
import { checkEventTable, checkPositionSequence, hasPositionIndex, hasTrigger, partitionsOf, relation } from './catalog.js';
import { eventTable } from './event-table.js';

/**
 * Everything a store needs before the runner reads it: the runner's migrations (db/migrate.ts), and for a foreign
 * source's table the steps below, `check` at every start, `attach` when it found something missing. The daemon, the
 * CLI commands and `migrate` call prepareStore; the native writer (EventStore.migrate) calls db's migrate directly. The foreign store is never altered beyond what is said here:
 * - an index on the position column when no valid index leads with it (Emmett 0.42 has none), built without
 *   blocking writers: CREATE INDEX CONCURRENTLY on each leaf partition, attached to a parent index created ON ONLY
 *   each partitioned level (PostgreSQL cannot build a partitioned table's index concurrently; ON ONLY creates an
 *   empty, invalid one in a moment, which becomes valid when every partition's index is attached). New partitions
 *   get the index from the parent automatically.
 * - the statement-level NOTIFY trigger (db/notify-trigger.ts), its function in the runner's schema reading the
 *   runner's wake-up flag, unless --no-notify-trigger: then the table is left completely alone and the runner wakes
 *   on its poll. An older release's trigger (one that notified on every insert, or read the flag in its function) is
 *   replaced.
 * The brief catalog locks these need (ON ONLY, ATTACH, CREATE TRIGGER) are taken with a short lock_timeout and
 * retried: a writer's transaction held open never gets the whole store queued behind migrate.
 * One process at a time attaches to a given table (instances starting together, two runner schemas on one store):
 * see withAttachLock.
 */

async function check(pool: pg.Pool, names: StoreNames): Promise<string[]> {
  const t = eventTable(names);
  await checkEventTable(pool, t);
  await checkPositionSequence(pool, t);
  const missing: string[] = [];
  if (t.indexPosition && !(await hasPositionIndex(pool, t))) missing.push(`an index on ${t.table} (${t.columns.position.name})`);
  if (names.source.notifyTrigger && t.trigger) {
    if (!(await hasTrigger(pool, t, t.trigger.name))) missing.push(`the NOTIFY trigger ${t.trigger.name} on ${t.table}`);
    else if (!(await isCurrentTrigger(pool, notifyTarget(names))))
      missing.push(`the current form of ${t.trigger.name} and ${t.trigger.functionQualified}`);
  }
  return missing;
}

/** What is still missing, added on `db` (the session that holds the attach lock). */
async function attach(db: pg.ClientBase, names: StoreNames): Promise<string[]> {
  const t = eventTable(names);
  const done: string[] = [];
  if (t.indexPosition && !(await hasPositionIndex(db, t))) {
    const { rows } = await db.query<{ oid: string }>('SELECT $1::regclass::oid::int8::text AS oid', [t.table]);
    await ensurePositionIndex(db, rows[0]!.oid, t.columns.position.name, done);
  }
  if (names.source.notifyTrigger && t.trigger) {
    const target = notifyTarget(names);
    if (!(await hasTrigger(db, t, t.trigger.name))) {
      await withShortLocks(db, notifyTriggerSql(target));
      done.push(
        `created the trigger ${t.trigger.name} on ${t.table} (AFTER INSERT, once per statement: NOTIFY ${names.channel} while the runner sleeps) and its function ${t.trigger.functionQualified}`,
      );
    } else if (!(await isCurrentTrigger(db, target))) {
      // An older release's trigger: it notified on every insert, or read the flag in its function's body, which every
      // INSERT statement called. Replaced, function and trigger, under the short lock CREATE TRIGGER takes.
      await withShortLocks(db, notifyTriggerSql(target, { replace: true }));
      done.push(
        `replaced the trigger ${t.trigger.name} on ${t.table} and its function ${t.trigger.functionQualified}: the wake-up flag read in the trigger's WHEN, NOTIFY only while the runner sleeps`,
      );
    }
  }
  return done;
}

/** A foreign table's NOTIFY trigger as this release makes it (its function in the runner's schema, the wake-up flag). */
function notifyTarget(names: StoreNames): NotifyTarget {
  const t = eventTable(names);
  return {
    tableQualified: t.table,
    positionColumn: t.columns.position.name,
    channel: names.channel,
    triggerName: t.trigger!.name,
    functionQualified: t.trigger!.functionQualified,
    wakeFlagLiteral: names.q.wakeFlagLiteral,
  };
}

/**
 * Whether the trigger and its function are the ones this release would create: the function's body, run as the writer
 * (not SECURITY DEFINER), and a WHEN on the trigger (an older release's notified on every insert, or read the flag in
 * the function's body).
 */
async function isCurrentTrigger(db: pg.Pool | pg.ClientBase, target: NotifyTarget): Promise<boolean> {
  const { rows } = await db.query<{ current: boolean }>(
    `SELECT coalesce((SELECT p.prosrc = $2 AND NOT p.prosecdef FROM pg_proc p WHERE p.oid = to_regprocedure($1)), false)
        AND EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = $3::regclass AND tgname = $4 AND tgqual IS NOT NULL) AS current`,
    [`${target.functionQualified!}()`, notifyFunctionBody(target), target.tableQualified, fitIdentifier(target.triggerName)],
  );
  return rows[0]!.current;
}

/** The runner's index on one relation's position column: pr_position_<oid>, in the relation's schema. */
async function ensurePositionIndex(db: pg.ClientBase, oid: string, column: string, done: string[]): Promise<string> {
  const rel = await relation(db, oid);
  const indexName = `pr_position_${oid}`;
  const index = `${quoteIdentifier(rel.schema)}.${quoteIdentifier(indexName)}`;
  const { rows } = await db.query<{ valid: boolean | null }>(
    `SELECT (SELECT i.indisvalid FROM pg_index i WHERE i.indexrelid = to_regclass($1)) AS valid`,
    [index],
  );
  const valid = rows[0]!.valid;
  const col = quoteIdentifier(column);
  if (rel.kind === 'p') {
    if (valid === null) {
      await withShortLocks(db, `CREATE INDEX ${quoteIdentifier(indexName)} ON ONLY ${rel.q} (${col})`);
      done.push(`created the index ${index} ON ONLY ${rel.q} (${column})`);
    }
    for (const child of await partitionsOf(db, oid)) {
      const childIndex = await ensurePositionIndex(db, child, column, done);
      const { rows: attached } = await db.query<{ yes: boolean }>(
        `SELECT EXISTS (SELECT 1 FROM pg_inherits WHERE inhrelid = to_regclass($1) AND inhparent = to_regclass($2)) AS yes`,
        [childIndex, index],
      );
      if (!attached[0]!.yes) {
        await withShortLocks(db, `ALTER INDEX ${index} ATTACH PARTITION ${childIndex}`);
        done.push(`attached ${childIndex} to ${index}`);
      }
    }
    return index;
  }
  if (valid === true) return index;
  // A concurrent build that failed leaves an invalid index behind: drop it and build again.
  if (valid === false) await db.query(`DROP INDEX CONCURRENTLY IF EXISTS ${index}`);
  await db.query(`CREATE INDEX CONCURRENTLY ${quoteIdentifier(indexName)} ON ${rel.q} (${col})`);
  done.push(`created the index ${index} on ${rel.q} (${column}) concurrently`);
  return index;
}

/** DDL on a table writers use, under short lock waits (db/short-locks.ts). */
async function withShortLocks(db: pg.ClientBase, sql: string): Promise<void> {
  await withShortLockWaits(db, async (tx) => {
    await tx.query(sql);
  });
}

/**
 * One process at a time attaches to a given table (db/session-lock.ts): the lock is keyed on the foreign table, not
 * on the runner's schema (two runner schemas may read one store). Without it, two instances starting together both
 * find the index or the trigger missing and both build it: one fails (the index name exists, pg_proc's unique key
 * under two CREATE OR REPLACE FUNCTION, a deadlock of two CREATE TRIGGER), and the start with it. What is missing is
 * looked at again under the lock.
 */
function withAttachLock<T>(pool: pg.Pool, names: StoreNames, fn: (db: pg.ClientBase) => Promise<T>): Promise<T> {
  return withSessionLock(pool, `projection-runner:attach:${eventTable(names).table}`, fn);
}

/**
 * migrate for any source. A foreign source's table is checked first (nothing is created when the configuration is
 * wrong: a ConfigError names the setting), then the runner's tables, then what reading needs on the foreign table.
 */
export async function prepareStore(pool: pg.Pool, names: StoreNames): Promise<MigrationReport> {
  if (names.source.kind === 'native') {
    const applied = await migrate(pool, names);
    // After migrate, which creates the sequence. A native sequence stepping by k also never ends events_append's
    // reservation of consecutive positions.
    await checkPositionSequence(pool, eventTable(names));
    return { applied, attached: [] };
  }
  const missing = await check(pool, names);
  const applied = await migrate(pool, names);
  return { applied, attached: missing.length > 0 ? await withAttachLock(pool, names, (db) => attach(db, names)) : [] };
}
