import type pg from 'pg';
import type { Logger } from 'pino';
import { quoteIdentifier, quoteLiteral, type StoreNames } from '../db/identifiers.js';
import { BuildRetiredError } from '../errors.js';
import type { Projection } from '../projection/projection.js';
import type { Build } from './builds.js';
import { switchToBuild, type SwitchOutcome } from './switch.js';

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
    const { names, build } = this.options;
    const role = `(SELECT role FROM ${names.q.builds} WHERE slot = ${quoteLiteral(build.slot)} FOR SHARE) AS build_role`;
    return build.schema === null ? role : `${role}, ${searchPathSql(build.schema, true)} AS build_path`;
  }

  /** The role scopeSql found: a build that is neither live nor building any more stops here (BuildRetiredError). */
  check(role: string | null | undefined): void {
    if (role === 'live' || role === 'building') return;
    throw new BuildRetiredError(this.options.build.slot, role ?? null);
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

/** `set_config('search_path', '"schema", ' || the current path, local)`: the build's schema first, the rest unchanged. */
function searchPathSql(schema: string, local: boolean): string {
  return `set_config('search_path', ${quoteLiteral(`${quoteIdentifier(schema)}, `)} || current_setting('search_path'), ${local})`;
}

/**
 * The module as the projector runs it for `build`: named by the build's slot (its checkpoint, leases, metrics), with
 * `setup` creating the build's schema and running with it first in the search path, and `reset` (replay) likewise.
 * Handlers get it through the batch's scopeSql. The first build, in place, is the module itself.
 */
export function scopedProjection(module: Projection, build: Build): Projection {
  const schema = build.schema;
  if (schema === null && build.slot === module.name) return module;
  const scoped: Projection = Object.create(module) as Projection;
  return Object.assign(scoped, {
    name: build.slot,
    async setup(db: pg.ClientBase) {
      if (schema === null) return module.setup?.call(scoped, db);
      await db.query(`CREATE SCHEMA IF NOT EXISTS ${quoteIdentifier(schema)}`);
      await db.query(`SELECT ${searchPathSql(schema, false)}`);
      try {
        await module.setup?.call(scoped, db);
      } finally {
        await db.query('RESET search_path');
      }
    },
    async reset(db: pg.ClientBase) {
      if (schema !== null) await db.query(`SELECT ${searchPathSql(schema, true)}`);
      await module.reset?.call(scoped, db);
    },
  });
}
