import type pg from 'pg';
import { withTransaction } from '../db/connection.js';
import { type StoreNames } from '../db/identifiers.js';
import { VersionRequestError } from '../errors.js';
import type { Projection, SwitchMode } from '../projection/projection.js';
import { heldLeaseCondition, leaseNamespace } from '../ownership/leases.js';
import { buildSchema, planBuild, planRebuild, type Build, type NewBuild } from './builds.js';
import { assertSchemaFree, createVersionSchema, dropVersionSchema, readSchemaDrop, type SchemaDrop } from './schemas.js';

/** All the SQL of projection_builds: reading, creating, the operators' requests (rebuild, switch, drop). */

const COLUMNS = `slot, projection, version, code_version, schema_name, role, switch_mode, target::text AS target, switch_error, relations`;

interface BuildRow {
  slot: string;
  projection: string;
  version: number;
  code_version: number;
  schema_name: string | null;
  role: Build['role'];
  switch_mode: SwitchMode;
  target: string;
  switch_error: string | null;
  relations: string[] | null;
}

const toBuild = (r: BuildRow): Build => ({
  slot: r.slot,
  projection: r.projection,
  version: r.version,
  codeVersion: r.code_version,
  schema: r.schema_name,
  role: r.role,
  switchMode: r.switch_mode,
  target: BigInt(r.target),
  switchError: r.switch_error,
  relations: r.relations,
});

/** A build in place: the relations its setup creates (probeSetupRelations), for the switch away from it. */
export async function recordRelations(db: pg.Pool | pg.ClientBase, names: StoreNames, slot: string, relations: string[]): Promise<void> {
  await db.query(`UPDATE ${names.q.builds} SET relations = $2 WHERE slot = $1 AND schema_name IS NULL`, [slot, relations]);
}

/** Every build, or one projection's; `lock` takes them FOR UPDATE (a switch, a drop). */
export async function readBuilds(db: pg.ClientBase | pg.Pool, names: StoreNames, projection?: string, lock = false): Promise<Build[]> {
  const { rows } = await db.query<BuildRow>(
    `SELECT ${COLUMNS} FROM ${names.q.builds} ${projection === undefined ? '' : 'WHERE projection = $1'}
      ORDER BY projection, version ${lock ? 'FOR UPDATE' : ''}`,
    projection === undefined ? [] : [projection],
  );
  return rows.map(toBuild);
}

/**
 * Serialises the writers of projection_builds (deployments starting, rebuild/switch/drop requests, switches) with a
 * transaction-scoped advisory lock: two instances starting a new version at once create one build.
 */
export async function lockBuilds(tx: pg.ClientBase, names: StoreNames): Promise<void> {
  await tx.query('SELECT pg_advisory_xact_lock(hashtext($1), 0)', [`${names.schema}.${names.table}:builds`]);
}

/**
 * Records a new build and, for a later one, creates its schema (createVersionSchema: refused when a schema of that name
 * exists). A live first build still in place will have its relations moved into `name_v<its version>` by the switch
 * to this one: that schema must be free too, checked now so that a build is never started towards a switch that
 * cannot happen.
 */
async function insertBuild(tx: pg.ClientBase, names: StoreNames, build: NewBuild, builds: Build[]): Promise<void> {
  await tx.query(
    `INSERT INTO ${names.q.builds} (slot, projection, version, code_version, schema_name, role, switch_mode, target)
     VALUES ($1, $2, $3, $4, $5, $6, $7, (SELECT position FROM ${names.q.highWater}))`,
    [build.slot, build.projection, build.version, build.codeVersion, build.schema, build.role, build.switchMode],
  );
  if (build.schema === null) return;
  await createVersionSchema(tx, names, build, build.schema, `the schema of version ${build.version}`);
  const inPlace = builds.find((b) => b.projection === build.projection && b.role === 'live' && b.schema === null);
  if (inPlace) {
    const schema = buildSchema(build.projection, inPlace.version);
    await assertSchemaFree(tx, build.projection, schema, `where the switch moves version ${inPlace.version}'s tables`);
  }
}

/** Wakes every instance's ownership loop (it reads the builds again): the channel replay requests use. */
async function announce(tx: pg.ClientBase, names: StoreNames, projection: string): Promise<void> {
  await tx.query('SELECT pg_notify($1, $2)', [names.replayChannel, projection]);
}

/**
 * At start: the builds the loaded modules need (planBuild), created in one transaction. Returns what was created and
 * the projections whose code is older than their newest build (they build nothing here).
 */
export async function syncBuilds(
  pool: pg.Pool,
  names: StoreNames,
  projections: Projection[],
  switchMode: SwitchMode,
): Promise<{ created: NewBuild[]; superseded: string[]; older: Array<{ projection: string; newest: number }> }> {
  return withTransaction(pool, async (tx) => {
    await lockBuilds(tx, names);
    const builds = await readBuilds(tx, names);
    const outcome = { created: [] as NewBuild[], superseded: [] as string[], older: [] as Array<{ projection: string; newest: number }> };
    for (const projection of projections) {
      const plan = planBuild(projection, builds, switchMode);
      if (plan.kind === 'older') outcome.older.push({ projection: projection.name, newest: plan.newest });
      if (plan.kind !== 'create') continue;
      if (plan.supersedes) {
        await tx.query(`UPDATE ${names.q.builds} SET role = 'kept' WHERE slot = $1`, [plan.supersedes]);
        outcome.superseded.push(plan.supersedes);
      }
      await insertBuild(tx, names, plan.build, builds);
      outcome.created.push(plan.build);
      if (plan.build.role === 'building') await announce(tx, names, projection.name);
    }
    return outcome;
  });
}

/** `rebuild NAME`: a new build of the live code beside the live one (planRebuild's refusals are typed). */
export async function requestRebuild(pool: pg.Pool, names: StoreNames, projection: string, switchMode: SwitchMode): Promise<NewBuild> {
  return withTransaction(pool, async (tx) => {
    await lockBuilds(tx, names);
    const builds = await readBuilds(tx, names, projection);
    const build = planRebuild(projection, builds, switchMode);
    await insertBuild(tx, names, build, builds);
    await announce(tx, names, projection);
    return build;
  });
}

/**
 * `switch NAME [--version N]`: without a version, the build being built switches as soon as it has caught up (its mode
 * becomes auto); with the version of a kept build, that build is run again, catches up, then switches.
 */
export async function requestSwitch(pool: pg.Pool, names: StoreNames, projection: string, version?: number): Promise<Build> {
  return withTransaction(pool, async (tx) => {
    await lockBuilds(tx, names);
    const mine = await readBuilds(tx, names, projection);
    if (mine.length === 0) throw new VersionRequestError(projection, 'it has no versions yet: start the daemon with it first');
    const building = mine.find((b) => b.role === 'building');
    const target = version === undefined ? building : mine.find((b) => b.version === version);
    if (!target) {
      throw new VersionRequestError(
        projection,
        version === undefined
          ? 'no version is being built: `projection-runner rebuild NAME`, or `switch NAME --version N` to go back to a kept one'
          : `there is no version ${version} (versions: ${describeVersions(mine)})`,
      );
    }
    if (target.role === 'live') throw new VersionRequestError(projection, `version ${target.version} is already live`);
    if (target.role === 'kept' && building) {
      throw new VersionRequestError(projection, `version ${building.version} is being built: switch to it or let it finish first`);
    }
    await tx.query(
      `UPDATE ${names.q.builds} SET role = 'building', switch_mode = 'auto', switch_error = NULL,
              target = CASE WHEN role = 'kept' THEN (SELECT position FROM ${names.q.highWater}) ELSE target END
        WHERE slot = $1`,
      [target.slot],
    );
    await announce(tx, names, projection);
    return { ...target, role: 'building', switchMode: 'auto' };
  });
}

/** A kept build of `projection`, for `drop`: anything else is refused (VersionRequestError). */
function droppable(builds: Build[], projection: string, version: number): Build {
  const build = builds.find((b) => b.version === version);
  if (!build) throw new VersionRequestError(projection, `there is no version ${version} (versions: ${describeVersions(builds)})`);
  if (build.role !== 'kept') {
    throw new VersionRequestError(projection, `version ${version} is ${build.role}: only a kept version can be dropped`);
  }
  return build;
}

/** What `drop NAME --version N` would remove, for its prompt (dropVersion reads it again in its transaction). */
export async function describeDrop(pool: pg.Pool, names: StoreNames, projection: string, version: number): Promise<SchemaDrop> {
  const build = droppable(await readBuilds(pool, names, projection), projection, version);
  const client = await pool.connect();
  try {
    return await readSchemaDrop(client, names, build.slot, build.schema);
  } finally {
    client.release();
  }
}

/**
 * A `rebuild` or `switch` that no instance took up (nobody holds the lease of its slot) goes back to what it was, so
 * that no daemon started later builds or switches by surprise: `previous` is the build's row before the request (a
 * rebuild's new build has none: it is set aside as kept, `drop` removes it). True when withdrawn; false when an
 * instance runs the slot by now.
 */
export async function withdrawBuildRequest(
  pool: pg.Pool,
  names: StoreNames,
  slot: string,
  previous: Pick<Build, 'role' | 'switchMode' | 'target'> | undefined,
): Promise<boolean> {
  return withTransaction(pool, async (tx) => {
    await lockBuilds(tx, names);
    const { rows } = await tx.query<{ projection: string }>(
      `UPDATE ${names.q.builds} SET role = $2, switch_mode = coalesce($3, switch_mode), target = coalesce($4::bigint, target)
        WHERE slot = $1 AND role = 'building'
          AND NOT EXISTS (SELECT 1 FROM pg_locks k WHERE ${heldLeaseCondition('k', '$5', '$1')})
        RETURNING projection`,
      [
        slot,
        previous?.role ?? 'kept',
        previous?.switchMode ?? null,
        previous?.target.toString() ?? null,
        leaseNamespace(names, 'projection'),
      ],
    );
    if (rows[0]) await announce(tx, names, rows[0].projection);
    return rows.length === 1;
  });
}

/**
 * `drop NAME --version N`: a kept build's schema (only when the runner created it, with what depends on it from
 * outside only with `cascade`: dropVersionSchema), checkpoint and bookkeeping, in one transaction. The live and the
 * building build are refused.
 */
export async function dropVersion(
  pool: pg.Pool,
  names: StoreNames,
  projection: string,
  version: number,
  options: { cascade?: boolean } = {},
): Promise<{ build: Build; dropped: SchemaDrop }> {
  return withTransaction(pool, async (tx) => {
    await lockBuilds(tx, names);
    const build = droppable(await readBuilds(tx, names, projection, true), projection, version);
    const dropped = await dropVersionSchema(tx, names, build, options.cascade ?? false);
    const q = names.q;
    for (const [table, column] of [
      [q.checkpoints, 'name'],
      [q.skippedPositions, 'projection'],
      [q.lateDeliveries, 'projection'],
      [q.deadLetters, 'projection'],
      [q.commands, 'projection'],
      [q.replays, 'projection'],
      [q.builds, 'slot'],
    ] as const) {
      await tx.query(`DELETE FROM ${table} WHERE ${column} = $1`, [build.slot]);
    }
    await announce(tx, names, projection);
    return { build, dropped };
  });
}

/**
 * The checkpoint name (slot) a command about a projection acts on: its live version's, or version `version`'s
 * (`retry`/`skip`/`dead-letters --version N`). A projection without versions yet is its own slot.
 */
export async function slotFor(db: pg.Pool | pg.ClientBase, names: StoreNames, projection: string, version?: number): Promise<string> {
  const builds = await readBuilds(db, names, projection);
  if (version === undefined) return builds.find((b) => b.role === 'live')?.slot ?? projection;
  const build = builds.find((b) => b.version === version);
  if (!build) throw new VersionRequestError(projection, `there is no version ${version} (versions: ${describeVersions(builds)})`);
  return build.slot;
}

/** "1 kept, 2 live": a projection's versions for messages. */
export const describeVersions = (builds: Build[]): string => builds.map((b) => `${b.version} ${b.role}`).join(', ') || 'none';
