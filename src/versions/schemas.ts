import type pg from 'pg';
import { quoteIdentifier, type StoreNames } from '../db/identifiers.js';
import { VersionDependentsError, VersionSchemaTakenError } from '../errors.js';

/**
 * All the SQL of the schemas of versions. A version's schema is the runner's only when the runner created it: a plain
 * CREATE SCHEMA (never IF NOT EXISTS, which would adopt an application's schema of that name and publish its tables
 * at the switch) in the transaction that records it with the build (`projection_builds.schema_oid`). What `drop`
 * removes is derived from that record: the schema only while its oid is the recorded one, and never, unless the
 * operator names the cascade, an object outside it that depends on it.
 */

/**
 * Creates `schema` for the build `slot` and records it as the runner's (its name and oid on the build's row), in the
 * caller's transaction. An existing schema of that name is not the runner's to take: VersionSchemaTakenError.
 */
export async function createVersionSchema(
  tx: pg.ClientBase,
  names: StoreNames,
  build: { slot: string; projection: string },
  schema: string,
  purpose: string,
): Promise<void> {
  await assertSchemaFree(tx, build.projection, schema, purpose);
  try {
    await tx.query(`CREATE SCHEMA ${quoteIdentifier(schema)}`);
  } catch (error) {
    // Created by someone else between the check and here (42P06; 23505 when both were creating it at once).
    if (['42P06', '23505'].includes((error as { code?: string }).code ?? '')) {
      throw new VersionSchemaTakenError(build.projection, schema, purpose);
    }
    throw error;
  }
  await tx.query(
    `UPDATE ${names.q.builds} SET schema_name = $2::text, schema_oid = (SELECT oid FROM pg_namespace WHERE nspname = $2::text) WHERE slot = $1`,
    [build.slot, schema],
  );
}

/** A schema the runner will need later (where a switch moves the first version's relations) must not exist yet. */
export async function assertSchemaFree(db: pg.ClientBase, projection: string, schema: string, purpose: string): Promise<void> {
  const { rowCount } = await db.query('SELECT 1 FROM pg_namespace WHERE nspname = $1', [schema]);
  if (rowCount) throw new VersionSchemaTakenError(projection, schema, purpose);
}

/** What dropping a version's schema removes, read before the drop (its prompt) and again in its transaction. */
export type SchemaDrop =
  /** No schema of its own (a first version in place), or none of that name any more: nothing to remove. */
  | { kind: 'none'; schema: string | null }
  /** A schema of that name that the runner did not create (or created before it recorded them): left in place. */
  | { kind: 'not-ours'; schema: string }
  /** The runner's schema: its objects (`objects`), and those outside it that depend on them (`dependents`). */
  | { kind: 'ours'; schema: string; objects: string[]; dependents: string[] };

/**
 * What dropping the schema of build `slot` would remove. The objects are the schema's members (each relation, type,
 * function created in it, as PostgreSQL describes them); the dependents are every object outside it that a
 * `DROP SCHEMA … CASCADE` would take along (pg_depend, followed to the end: an application's view, a foreign key, a
 * column default), a view named by its view rather than its rule, and a constraint's internal triggers left out.
 */
export async function readSchemaDrop(db: pg.ClientBase, names: StoreNames, slot: string, schema: string | null): Promise<SchemaDrop> {
  if (schema === null) return { kind: 'none', schema };
  const { rows } = await db.query<{ oid: number; ours: boolean }>(
    `SELECT n.oid, n.oid = b.schema_oid AS ours FROM pg_namespace n, ${names.q.builds} b WHERE n.nspname = $1 AND b.slot = $2`,
    [schema, slot],
  );
  const found = rows[0];
  if (!found) return { kind: 'none', schema };
  if (!found.ours) return { kind: 'not-ours', schema };
  const objects = await db.query<{ object: string }>(
    `SELECT pg_describe_object(classid, objid, objsubid) AS object FROM pg_depend
      WHERE refclassid = 'pg_namespace'::regclass AND refobjid = $1 ORDER BY 1`,
    [found.oid],
  );
  const dependents = await db.query<{ object: string }>(DEPENDENTS_SQL, [found.oid]);
  return { kind: 'ours', schema, objects: objects.rows.map((r) => r.object), dependents: dependents.rows.map((r) => r.object) };
}

/**
 * Every object outside schema $1 that depends, directly or through others, on an object in it. An object's schema is
 * its own (relations, types, functions, constraints, statistics) or its relation's (rules, triggers, defaults,
 * policies); pg_toast holds only the toast of tables, which go with their table; an object of another kind is counted
 * as outside (listed, never dropped silently).
 */
const DEPENDENTS_SQL = `
  WITH RECURSIVE closure(classid, objid, objsubid) AS (
    SELECT classid, objid, objsubid FROM pg_depend WHERE refclassid = 'pg_namespace'::regclass AND refobjid = $1
    UNION
    SELECT d.classid, d.objid, d.objsubid FROM pg_depend d JOIN closure c ON d.refclassid = c.classid AND d.refobjid = c.objid
  ), placed AS (
    SELECT c.*, CASE c.classid
      WHEN 'pg_class'::regclass THEN (SELECT relnamespace FROM pg_class WHERE oid = c.objid)
      WHEN 'pg_type'::regclass THEN (SELECT typnamespace FROM pg_type WHERE oid = c.objid)
      WHEN 'pg_proc'::regclass THEN (SELECT pronamespace FROM pg_proc WHERE oid = c.objid)
      WHEN 'pg_constraint'::regclass THEN (SELECT connamespace FROM pg_constraint WHERE oid = c.objid)
      WHEN 'pg_statistic_ext'::regclass THEN (SELECT stxnamespace FROM pg_statistic_ext WHERE oid = c.objid)
      WHEN 'pg_rewrite'::regclass THEN (SELECT r.relnamespace FROM pg_rewrite w JOIN pg_class r ON r.oid = w.ev_class WHERE w.oid = c.objid)
      WHEN 'pg_trigger'::regclass THEN (SELECT r.relnamespace FROM pg_trigger t JOIN pg_class r ON r.oid = t.tgrelid WHERE t.oid = c.objid)
      WHEN 'pg_attrdef'::regclass THEN (SELECT r.relnamespace FROM pg_attrdef a JOIN pg_class r ON r.oid = a.adrelid WHERE a.oid = c.objid)
      WHEN 'pg_policy'::regclass THEN (SELECT r.relnamespace FROM pg_policy p JOIN pg_class r ON r.oid = p.polrelid WHERE p.oid = c.objid)
    END AS schema_oid FROM closure c
  )
  SELECT DISTINCT CASE WHEN p.classid = 'pg_rewrite'::regclass
                       THEN (SELECT pg_describe_object('pg_class'::regclass, w.ev_class, 0) FROM pg_rewrite w WHERE w.oid = p.objid)
                       ELSE pg_describe_object(p.classid, p.objid, p.objsubid) END AS object
    FROM placed p
   WHERE p.schema_oid IS DISTINCT FROM $1 AND p.schema_oid IS DISTINCT FROM 'pg_toast'::regnamespace
     AND NOT (p.classid = 'pg_trigger'::regclass AND EXISTS (SELECT 1 FROM pg_trigger t WHERE t.oid = p.objid AND t.tgisinternal))
   ORDER BY 1`;

/**
 * Drops the runner's schema of build `slot`, in the caller's transaction, if it still is what `readSchemaDrop` says:
 * its tables and views locked first, so no new dependent appears between the check and the drop; dependents outside
 * it only with `cascade`, else VersionDependentsError. A schema that is not the runner's is left as it is.
 */
export async function dropVersionSchema(
  tx: pg.ClientBase,
  names: StoreNames,
  build: { slot: string; projection: string; schema: string | null },
  cascade: boolean,
): Promise<SchemaDrop> {
  const before = await readSchemaDrop(tx, names, build.slot, build.schema);
  if (before.kind !== 'ours') return before;
  const { rows } = await tx.query<{ relation: string }>(
    `SELECT c.oid::regclass::text AS relation FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = $1 AND c.relkind IN ('r', 'p', 'v')`,
    [before.schema],
  );
  if (rows.length > 0) await tx.query(`LOCK TABLE ${rows.map((r) => r.relation).join(', ')} IN ACCESS EXCLUSIVE MODE`);
  const drop = await readSchemaDrop(tx, names, build.slot, build.schema);
  if (drop.kind !== 'ours') return drop;
  if (drop.dependents.length > 0 && !cascade) throw new VersionDependentsError(build.projection, drop.schema, drop.dependents);
  await tx.query(`DROP SCHEMA ${quoteIdentifier(drop.schema)} CASCADE`);
  return drop;
}
