import type pg from 'pg';
import type { Logger } from 'pino';
import { quoteIdentifier, quoteLiteral, type StoreNames } from '../db/identifiers.js';
import { BuildRetiredError } from '../errors.js';
import type { Projection } from '../projection/projection.js';
import type { Build } from './builds.js';
import { switchToBuild, type SwitchOutcome } from './switch.js';
import { recordRelations } from './builds-sql.js';

/**
 * One build as its projector sees it: the projection under the build's slot, the SQL that scopes each batch
 * transaction to the build, and the switch once a building build has caught up. The projector asks it; the build's
 * row in projection_builds is the truth.
 */
export class BuildSlot {
  readonly projection: Projection;

  constructor(private readonly options: { pool: pg.Pool; names: StoreNames; build: Build; module: Projection; log: Logger }) {
    this.projection = scopedProjection(options.module, options.build);
  }

  get build(): Build {
    return this.options.build;
  }

  /** The loaded module whose code builds it. */
  get module(): Projection {
    return this.options.module;
  }

  get building(): boolean {
    return this.options.build.role === 'building';
  }

  /**
   * Select-list expressions for the first statement of every transaction that runs this build's handlers
   * (beginBatch, a dead letter's re-delivery): the build's row FOR SHARE — a switch waits for the batch to end and
   * the batch sees the role the switch left — and, for a build with a schema of its own, that schema first in the
   * transaction's search path, so the handler's unqualified names are this build's tables.
   */
  scopeSql(): string {
    const { slot, searchPath } = this.scope;
    return buildScopeColumns(this.options.names, quoteLiteral(slot), searchPath === null ? 'NULL' : quoteLiteral(searchPath));
  }

  /** What scopeSql inlines, as values: for the batch's prepared statement (checkpoints.ts beginBatch). */
  get scope(): BuildScope {
    const { build } = this.options;
    return { slot: build.slot, searchPath: build.schema === null ? null : searchPath(build.schema) };
  }

  /**
   * The build as scopeSql found it must be the one this projector was started with: the same role and schema. A
   * switch away from it (kept), a drop, or a move of the first build's tables followed by a switch back (building in
   * its new schema) before this instance's ownership pass noticed: the projector stops here (BuildRetiredError),
   * before its handler writes through names that are not its own any more; the runner starts it again if it is
   * still to run.
   */
  check(found: string | null | undefined): void {
    const { build } = this.options;
    const now = found ? (JSON.parse(found) as { role: string; schema: string | null }) : undefined;
    if (now && now.role === build.role && now.schema === build.schema) return;
    throw new BuildRetiredError(build.slot, now);
  }

  /**
   * The arguments of the batch's build check (checkpoints.ts batchBeginSql, over buildCheckSql), as SQL literals:
   * the slot, the role and schema this projector was started with (JSON), the search path.
   */
  checkArguments(): [slot: string, expected: string, path: string] {
    const { build } = this.options;
    const { slot, searchPath } = this.scope;
    return [
      quoteLiteral(slot),
      quoteLiteral(JSON.stringify({ role: build.role, schema: build.schema })),
      searchPath === null ? 'NULL' : quoteLiteral(searchPath),
    ];
  }

  /** The BuildRetiredError that buildCheckSql raised as `error`, with what it found; undefined for any other error. */
  retiredBy(error: unknown): BuildRetiredError | undefined {
    const message = (error as { code?: string; message?: string } | undefined)?.message;
    if ((error as { code?: string } | undefined)?.code !== '22P02' || !message?.includes(BUILD_CHANGED)) return undefined;
    // The value the cast refused, quoted in the message: what the row held (JSON), then the words.
    const found = message.slice(message.indexOf('"') + 1, message.lastIndexOf(` ${BUILD_CHANGED}`));
    const now = JSON.parse(found) as { role: string; schema: string | null } | null;
    return new BuildRetiredError(this.options.build.slot, now ?? undefined);
  }

  /** Scopes a transaction that runs this build's code outside a batch (a re-delivery, a replay's reset), as a batch is. */
  async enter(tx: pg.ClientBase): Promise<void> {
    const { rows } = await tx.query<{ build_scope: string | null }>(`SELECT ${this.scopeSql()}`);
    this.check(rows[0]?.build_scope);
  }

  /**
   * The build's setup, on a connection of its own (scopedProjection: in the build's schema). A build in place (the
   * first) also has its setup run once more in a scratch schema, rolled back, to learn which relations it creates:
   * what a switch away from it moves (probeSetupRelations). A setup that cannot run in a transaction (CREATE INDEX
   * CONCURRENTLY) or in a temporary schema leaves them unknown (the switch then moves the names the new build uses).
   */
  async setUp(client: pg.ClientBase): Promise<void> {
    const { names, build, module, log } = this.options;
    await this.projection.setup?.(client);
    if (build.schema !== null || !module.setup) return;
    const relations = await probeSetupRelations(client, (db) => module.setup!.call(module, db));
    if (relations.ok) await recordRelations(client, names, build.slot, relations.names);
    else {
      log.warn(
        { projection: build.slot, reason: relations.reason },
        "could not learn which relations setup creates: a switch away from this version moves only the next version's names",
      );
    }
  }

  /**
   * A building build has caught up with H after a batch: the switch, if its mode is auto (switchToBuild). `catchUpTo`
   * applies this build's events up to a position (the live build's checkpoint, frozen meanwhile) and returns where
   * its checkpoint is then.
   */
  async caughtUp(catchUpTo: (position: bigint) => Promise<bigint>): Promise<SwitchOutcome | undefined> {
    const { pool, names, build, log } = this.options;
    if (!this.building) return undefined;
    const outcome = await switchToBuild(pool, names, build, catchUpTo, log);
    if (outcome.switched) {
      build.role = 'live';
      log.info({ projection: build.projection, version: build.version, views: outcome.views }, 'switched: this version is live now');
    }
    return outcome;
  }
}

/** The words of buildCheckSql' error. */
const BUILD_CHANGED = 'build changed: the batch stops before its handler writes';

/**
 * The search path of a version with a schema of its own: that schema, then pg_catalog, then pg_temp (named last, so a
 * temporary table never shadows the read model). Nothing else: an unqualified name the version did not create is an
 * error, never the live version's table found further along the path (a setup that checks `to_regclass('totals')`
 * would otherwise find the live one, create nothing, and write into it).
 */
function searchPath(schema: string): string {
  return `${quoteIdentifier(schema)}, pg_catalog, pg_temp`;
}

function searchPathSql(schema: string, local: boolean): string {
  return `set_config('search_path', ${quoteLiteral(searchPath(schema))}, ${local})`;
}

/** A build's slot and the search path of its transactions (null: a build in place keeps the session's). */
export interface BuildScope {
  slot: string;
  searchPath: string | null;
}

/**
 * The select-list of scopeSql, over SQL expressions of the slot and the search path (literals or a prepared
 * statement's parameters): the build's role and schema as JSON, its row FOR SHARE, and the search path set for the
 * transaction when there is one.
 */
export function buildScopeColumns(names: StoreNames, slot: string, path: string): string {
  return `(SELECT json_build_object('role', role, 'schema', schema_name)::text FROM ${names.q.builds}
            WHERE slot = ${slot} FOR SHARE) AS build_scope,
          CASE WHEN ${path} IS NULL THEN NULL ELSE set_config('search_path', ${path}, true) END AS build_path`;
}

/**
 * A statement over buildScopeColumns that checks on the server, over SQL expressions of the slot, the role and schema expected (JSON)
 * and the search path: a batch's transaction begins with it and its handler's first statement follows in the same
 * connection's queue (BatchTransaction), so a row that is no longer the build's must stop the transaction there: the
 * statement raises (BuildSlot.retiredBy reads it), the transaction is aborted, nothing of the handler's runs. A check
 * in the projector, after the round trip, would come after the handler's statements had run.
 */
export function buildCheckSql(names: StoreNames, slot: string, expected: string, path: string): string {
  return `SELECT CASE WHEN s.build_scope::jsonb = ${expected}::jsonb THEN 1
                      ELSE (coalesce(s.build_scope, 'null') || ${quoteLiteral(` ${BUILD_CHANGED}`)})::int4 END AS build_checked,
                 s.build_path
            FROM (SELECT ${buildScopeColumns(names, slot, path)}) s`;
}

/**
 * The module as the projector runs it for `build`: named by the build's slot (its checkpoint, leases, metrics), with
 * `setup` running in the build's schema (created with the build's row: schemas.ts createVersionSchema). Handlers and a replay's `reset` run in transactions scoped by
 * scopeSql/enter. The first build, in place, is the module itself.
 */
export function scopedProjection(module: Projection, build: Build): Projection {
  const schema = build.schema;
  if (schema === null && build.slot === module.name) return module;
  const scoped: Projection = Object.create(module) as Projection;
  return Object.assign(scoped, {
    name: build.slot,
    async setup(db: pg.ClientBase) {
      if (schema === null) return module.setup?.call(scoped, db);
      await db.query(`SELECT ${searchPathSql(schema, false)}`);
      try {
        await module.setup?.call(scoped, db);
      } finally {
        await db.query('RESET search_path');
      }
    },
  });
}

/**
 * The relations `setup` creates, learned by running it again in a transaction that is rolled back, with the session's
 * temporary schema as the only schema of the search path (and pg_catalog): its CREATE … IF NOT EXISTS statements find
 * nothing there and create every relation again, as temporary ones (no privilege needed beyond TEMP, which every role
 * has by default). A setup that needs another schema fails here: its relations stay unknown.
 */
export async function probeSetupRelations(
  client: pg.ClientBase,
  setup: (db: pg.ClientBase) => Promise<void>,
): Promise<{ ok: true; names: string[] } | { ok: false; reason: string }> {
  await client.query('BEGIN');
  try {
    // Only the temporary schema: whatever the setup would find elsewhere (its existing tables) it must create here.
    await client.query(`SELECT set_config('search_path', 'pg_temp, pg_catalog', true)`);
    await setup(client);
    // Relations, and sequences of their own (not those a serial or identity column owns: they move with their table).
    const { rows } = await client.query<{ name: string }>(
      `SELECT c.relname AS name FROM pg_class c
        WHERE c.relnamespace = pg_my_temp_schema()
          AND (c.relkind IN ('r', 'p', 'v', 'm', 'f')
               OR (c.relkind = 'S' AND NOT EXISTS (SELECT 1 FROM pg_depend d
                                                    WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype IN ('a', 'i'))))
        ORDER BY c.relname`,
    );
    return { ok: true, names: rows.map((r) => r.name) };
  } catch (error) {
    return { ok: false, reason: error instanceof Error ? error.message : String(error) };
  } finally {
    await client.query('ROLLBACK').catch(() => {});
    // A setup that committed by itself (its own COMMIT) would leave temporary relations in this pooled session, and
    // pg_temp is searched first by default: they must never shadow the read model in a later batch.
    await client.query('DISCARD TEMP').catch(() => {});
  }
}
