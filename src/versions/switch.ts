import type pg from 'pg';
import type { Logger } from 'pino';
import { withTransaction } from '../db/connection.js';
import { quoteIdentifier, type StoreNames } from '../db/identifiers.js';
import { OldSnapshotsError, ReadNameTakenError, VersionSchemaTakenError } from '../errors.js';
import { switchStatements, type ReadRelation, type SwitchStep } from './builds.js';
import { lockBuilds, readBuilds } from './builds-sql.js';
import { createVersionSchema } from './schemas.js';
import { awaitNewerSnapshots, lockAll, snapshotHorizon, SWITCH_LOCK_TIMEOUT_MS } from './switch-waits.js';

export { SWITCH_LOCK_TIMEOUT_MS } from './switch-waits.js';

export type SwitchOutcome = { switched: true; views: string[] } | { switched: false; reason: string };

/**
 * Makes the building build `slot` live, in one transaction, at a batch boundary of both builds:
 * 1. the live build's row is locked FOR UPDATE: every batch takes its build's row FOR SHARE when it begins
 *    (beginBatch), so this waits for the live build's batch in flight and holds its next one until the switch is over
 *    (a batch that then finds its build no longer live stops with BuildRetiredError before its handler writes);
 * 2. the new build catches up with the live one's checkpoint, frozen now (`catchUpTo`: its own batches, in
 *    transactions of their own): a reader never sees a balance go back. Without the freeze, under a steady stream of
 *    appends the live build was nearly always a batch ahead when compared, and the switch never came;
 * 3. the new build's row is locked too; the switch waits (bounded, holding no lock a reader needs) until no other
 *    transaction holds a snapshot older than the new build's data (awaitNewerSnapshots): one under REPEATABLE READ or
 *    SERIALIZABLE that reads the names only after the switch would read the new tables with it, and find them empty;
 * 4. the read names become views over its relations (switchStatements): a reader sees the old read model or the new
 *    one, never a mix (it holds its views until its transaction ends, and the switch needs them all);
 * 5. roles: the new build live, the previous one kept (no longer updated); the instances are told (NOTIFY).
 * Anything in the way (a lock not granted in time, an old snapshot still held, a name or a schema taken) rolls it all back; the reason is recorded in the
 * build's switch_error and the projector tries again after its next batch.
 */
export async function switchToBuild(
  pool: pg.Pool,
  names: StoreNames,
  build: { slot: string; projection: string },
  catchUpTo: (position: bigint) => Promise<bigint>,
  log: Logger,
): Promise<SwitchOutcome> {
  const { slot, projection } = build;
  try {
    return await withTransaction(pool, async (tx) => {
      await tx.query(`SET LOCAL lock_timeout = ${SWITCH_LOCK_TIMEOUT_MS}`);
      await lockBuilds(tx, names);
      const builds = await readBuilds(tx, names, projection);
      const next = builds.find((b) => b.slot === slot);
      if (!next || next.role !== 'building') return { switched: false, reason: `${slot} is not being built` };
      if (next.switchMode !== 'auto') return { switched: false, reason: 'waiting for `projection-runner switch`' };
      const previous = builds.find((b) => b.role === 'live');
      let live = { position: 0n, lateSeenId: 0n };
      if (previous) {
        await lockBuildRow(tx, names, previous.slot);
        live = (await checkpointsOf(tx, names, [previous.slot])).get(previous.slot) ?? live;
      }
      const reached = await catchUpTo(live.position);
      if (reached < live.position) return { switched: false, reason: `${live.position - reached} events behind the live version` };
      // Late deliveries too: the live version may have applied a late event that this one has not dealt with yet (its
      // next normal batch does); switching now would take that event away from the application for a moment.
      const own = (await checkpointsOf(tx, names, [slot])).get(slot);
      if (!own || own.lateSeenId < live.lateSeenId)
        return { switched: false, reason: 'late deliveries the live version applied are pending here' };
      await lockBuildRow(tx, names, slot);
      // The new version's data is final now (caught up and committed; the live version frozen): a snapshot taken
      // from here on sees it, an older one may see its tables empty.
      const horizon = await snapshotHorizon(tx);

      const readSchema = (await tx.query<{ s: string }>('SELECT current_schema() AS s')).rows[0]!.s;
      const nextRelations = next.schema === null ? [] : await relationsIn(tx, next.schema);
      const plan = switchStatements({
        projection,
        readSchema,
        nextSchema: next.schema,
        nextRelations,
        previous: previous && { version: previous.version, inPlace: previous.schema === null, relations: previous.relations },
        existing: await readRelations(tx, names, readSchema, projection, [...nextRelations, ...(previous?.relations ?? [])]),
        quote: quoteIdentifier,
        nameTaken: (relation) => new ReadNameTakenError(projection, relation),
      });
      await awaitNewerSnapshots(tx, projection, horizon);
      if (plan.movedTo && previous) {
        await createVersionSchema(tx, names, previous, plan.movedTo, `where the switch moves version ${previous.version}'s tables`);
      }
      await lockAll(tx, plan.locks, plan.guarded);
      for (const step of plan.statements) await run(tx, step);
      await tx.query(`DELETE FROM ${names.q.readViews} WHERE projection = $1`, [projection]);
      await tx.query(
        `INSERT INTO ${names.q.readViews} (read_schema, view_name, projection) SELECT $1, v, $2 FROM unnest($3::text[]) AS v`,
        [readSchema, projection, plan.views],
      );
      if (previous) {
        await tx.query(`UPDATE ${names.q.builds} SET role = 'kept' WHERE slot = $1`, [previous.slot]);
      }
      await tx.query(`UPDATE ${names.q.builds} SET role = 'live', switched_at = now(), switch_error = NULL WHERE slot = $1`, [slot]);
      await tx.query('SELECT pg_notify($1, $2)', [names.replayChannel, projection]);
      return { switched: true, views: plan.views };
    });
  } catch (error) {
    // 55P03: a lock not granted within the timeout (a long reader, a long batch); 40P01: a deadlock, same remedy;
    // 2BP01: an object of the application depends on a view the switch must drop (its columns changed); a name or
    // a schema taken by the application: the operator's to free, the reason shown meanwhile.
    const code = (error as { code?: string }).code;
    const postponed = [ReadNameTakenError, VersionSchemaTakenError, OldSnapshotsError].some((type) => error instanceof type);
    if (!postponed && !['55P03', '40P01', '2BP01'].includes(code ?? '')) throw error;
    const reason = error instanceof Error ? error.message : String(error);
    log.warn({ slot, reason }, 'switch postponed: trying again after the next batch');
    await pool.query(`UPDATE ${names.q.builds} SET switch_error = $2 WHERE slot = $1`, [slot, reason]).catch(() => {});
    return { switched: false, reason };
  }
}

/** One step of the plan; a failing one with `orElse` (CREATE OR REPLACE VIEW on changed columns) runs that instead. */
async function run(tx: pg.ClientBase, step: SwitchStep): Promise<void> {
  if (!step.orElse) {
    await tx.query(step.sql);
    return;
  }
  await tx.query('SAVEPOINT pr_switch_step');
  try {
    await tx.query(step.sql);
    await tx.query('RELEASE SAVEPOINT pr_switch_step');
  } catch {
    await tx.query('ROLLBACK TO SAVEPOINT pr_switch_step');
    for (const sql of step.orElse) await tx.query(sql);
  }
}

async function lockBuildRow(tx: pg.ClientBase, names: StoreNames, slot: string): Promise<void> {
  await tx.query(`SELECT 1 FROM ${names.q.builds} WHERE slot = $1 FOR UPDATE`, [slot]);
}

async function checkpointsOf(
  tx: pg.ClientBase,
  names: StoreNames,
  slots: string[],
): Promise<Map<string, { position: bigint; lateSeenId: bigint }>> {
  const { rows } = await tx.query<{ name: string; position: string; late_seen_id: string }>(
    `SELECT name, position::text, late_seen_id::text FROM ${names.q.checkpoints} WHERE name = ANY($1)`,
    [slots],
  );
  return new Map(rows.map((r) => [r.name, { position: BigInt(r.position), lateSeenId: BigInt(r.late_seen_id) }]));
}

/** The relations a build's setup created in its schema (not partitions: their parent is what one reads). */
async function relationsIn(tx: pg.ClientBase, schema: string): Promise<string[]> {
  const { rows } = await tx.query<{ name: string }>(
    `SELECT c.relname AS name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = $1 AND c.relkind IN ('r', 'p', 'v', 'm', 'f') AND NOT c.relispartition ORDER BY c.relname`,
    [schema],
  );
  return rows.map((r) => r.name);
}

/** What occupies, in the read schema, the names the switch needs and the names of the projection's current views. */
async function readRelations(
  tx: pg.ClientBase,
  names: StoreNames,
  readSchema: string,
  projection: string,
  wanted: string[],
): Promise<ReadRelation[]> {
  const { rows } = await tx.query<ReadRelation>(
    `SELECT c.relname AS name, c.relkind::text AS kind,
            EXISTS (SELECT 1 FROM ${names.q.readViews} v
                     WHERE v.read_schema = $1 AND v.view_name = c.relname AND v.projection = $2) AND c.relkind = 'v' AS ours
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = $1
        AND (c.relname = ANY($3) OR c.relname IN (SELECT view_name FROM ${names.q.readViews} WHERE read_schema = $1 AND projection = $2))`,
    [readSchema, projection, wanted],
  );
  return rows;
}
