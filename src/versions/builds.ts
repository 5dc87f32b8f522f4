import { VersionRequestError } from '../errors.js';
import type { Projection, SwitchMode } from '../projection/projection.js';

/**
 * Versions of a projection's read model ("builds"), and the pure decisions about them: which build a deployment
 * needs, which builds this instance runs, and what a switch does to the names the application reads.
 *
 * A build has a checkpoint row of its own, its `slot`. The first build of a projection keeps the projection's name as
 * its slot and its tables where its setup created them (so a deployment from before versions carries on untouched);
 * a later one is `name@vN`, built in schema `name_vN` through the search path of its transactions, so handler code
 * never knows which version it writes. One build is `live`, at most one is `building`, the others are `kept`.
 */

export const BUILD_ROLES = ['live', 'building', 'kept'] as const;
export type BuildRole = (typeof BUILD_ROLES)[number];

export interface Build {
  slot: string;
  projection: string;
  /** The number operators use (`switch --version`, `drop --version`); the module's version when it was free. */
  version: number;
  /** The module version whose code builds it (a `rebuild` builds the live code again under a new version). */
  codeVersion: number;
  /** Null: in place (the first build). */
  schema: string | null;
  role: BuildRole;
  switchMode: SwitchMode;
  /** H when the build started: what its progress is measured against. */
  target: bigint;
  switchError: string | null;
  /** A first build (in place): the relations its setup creates, what a switch away from it moves; null: unknown. */
  relations: string[] | null;
}

export type NewBuild = Omit<Build, 'target' | 'switchError' | 'relations'>;

/** The module's version: `version`, default 1. */
export const moduleVersion = (projection: Projection): number => projection.version ?? 1;

/** The schema of a build other than the first. */
export const buildSchema = (projection: string, version: number): string => `${projection}_v${version}`;

function laterBuild(projection: string, version: number, codeVersion: number, switchMode: SwitchMode): NewBuild {
  return {
    slot: `${projection}@v${version}`,
    projection,
    version,
    codeVersion,
    schema: buildSchema(projection, version),
    role: 'building',
    switchMode,
  };
}

export type BuildPlan =
  /** This code's build exists (whatever its role): nothing to create. */
  | { kind: 'none' }
  /** No build yet: the first one, live at once, in place. */
  | { kind: 'create'; build: NewBuild; supersedes?: string }
  /** This code is older than the newest build's: it builds nothing (an old release during a blue/green overlap). */
  | { kind: 'older'; newest: number };

/**
 * What a deployment of `projection` needs. A module version with no build yet, newer than every build's code, starts
 * a new build beside the live one; one already building (from an older code or a rebuild) is superseded (kept).
 */
export function planBuild(projection: Projection, builds: Build[], switchMode: SwitchMode): BuildPlan {
  const name = projection.name;
  const version = moduleVersion(projection);
  const mine = builds.filter((b) => b.projection === name);
  if (mine.length === 0) {
    return {
      kind: 'create',
      build: { slot: name, projection: name, version, codeVersion: version, schema: null, role: 'live', switchMode },
    };
  }
  if (mine.some((b) => b.codeVersion === version)) return { kind: 'none' };
  const newest = Math.max(...mine.map((b) => b.codeVersion));
  if (version < newest) return { kind: 'older', newest };
  const number = Math.max(version, ...mine.map((b) => b.version + 1));
  return {
    kind: 'create',
    build: laterBuild(name, number, version, switchMode),
    supersedes: mine.find((b) => b.role === 'building')?.slot,
  };
}

/** `rebuild NAME`: the live build's code built again from zero, under the next free version. */
export function planRebuild(projection: string, builds: Build[], switchMode: SwitchMode): NewBuild {
  const mine = builds.filter((b) => b.projection === projection);
  const live = mine.find((b) => b.role === 'live');
  if (!live) throw new VersionRequestError(projection, 'it has no live version yet: start the daemon with it first');
  const building = mine.find((b) => b.role === 'building');
  if (building) {
    throw new VersionRequestError(
      projection,
      `version ${building.version} is already being built; wait for it, or drop it once switched away (see \`projection-runner status\`)`,
    );
  }
  return laterBuild(projection, Math.max(...mine.map((b) => b.version)) + 1, live.codeVersion, switchMode);
}

/** A unit of work for an instance: a build and the loaded module whose code builds it. */
export interface BuildUnit {
  build: Build;
  module: Projection;
}

/** The builds this instance runs: the live and building ones made by the code it loaded. */
export function buildsToRun(projections: Projection[], builds: Build[]): BuildUnit[] {
  return builds.flatMap((build) => {
    const module = projections.find((p) => p.name === build.projection);
    if (!module || moduleVersion(module) !== build.codeVersion || build.role === 'kept') return [];
    return [{ build, module }];
  });
}

/** A relation in the read schema under a name the switch needs (see switchStatements). */
export interface ReadRelation {
  name: string;
  /** pg_class.relkind: r table, p partitioned table, v view, m materialized view, f foreign table, others. */
  kind: string;
  /** A view the runner made for this projection (projection_read_views). */
  ours: boolean;
}

/** The ALTER … SET SCHEMA of each kind of relation a setup may create (others are never moved). */
const MOVABLE: Record<string, string> = { r: 'TABLE', p: 'TABLE', v: 'VIEW', m: 'MATERIALIZED VIEW', f: 'FOREIGN TABLE', S: 'SEQUENCE' };

/** A statement of a switch; `orElse`: what to run instead when it fails (a view whose columns changed). */
export interface SwitchStep {
  sql: string;
  orElse?: string[];
}

/** A relation LOCK TABLE refuses (materialized view, sequence, foreign table), taken by a statement that changes nothing. */
export interface GuardedRelation {
  relation: string;
  /** Its ALTER keyword: `ALTER <alter> <relation> OWNER TO <its owner>` takes the lock its move needs. */
  alter: string;
}

export interface SwitchPlan {
  /** The relations in the read schema the statements change (tables and views), locked all at once first. */
  locks: string[];
  /** The other relations the statements change (moved ones that LOCK TABLE refuses): taken with them (lockAll). */
  guarded: GuardedRelation[];
  statements: SwitchStep[];
  /** The views the application reads after the switch. */
  views: string[];
  /**
   * Where the previous build's tables go, when it was in place: its new schema, which the switch creates before the
   * statements (createVersionSchema: the runner's, never an existing one); undefined: it stays where it is.
   */
  movedTo: string | undefined;
}

/**
 * The statements of a switch to `next`, all in one transaction: the application reads `readSchema.<name>` for every
 * relation of the next build's schema. The runner's own views of the projection are dropped; the relations of a
 * previous build that was in place (the first build) move into a schema of its own under the same names — all those
 * its setup creates (`previous.relations`, found by running it in a scratch schema: probeSetupRelations), each
 * partition too, so a switch back finds them all there; when they are unknown, the tables under the new build's names
 * — so the names become views; any other relation in the way stops the switch (ReadNameTakenError), before anything
 * changed.
 */
export function switchStatements(input: {
  projection: string;
  readSchema: string;
  /** Null: the next build is in place (a first build switched back to without a move): it needs no views. */
  nextSchema: string | null;
  nextRelations: string[];
  previous: { version: number; inPlace: boolean; relations: string[] | null } | undefined;
  existing: ReadRelation[];
  quote: (identifier: string) => string;
  nameTaken: (relation: string) => Error;
}): SwitchPlan {
  const { quote, readSchema } = input;
  const read = (name: string) => `${quote(readSchema)}.${quote(name)}`;
  const statements: SwitchStep[] = [];
  const existing = new Map(input.existing.map((r) => [r.name, r]));
  // Unknown relations (a setup the probe could not run): nothing moves, the previous build stays in place, and a name
  // the new build needs that is taken stops the switch — never a guess that could move an application's table.
  const movedTo =
    input.previous?.inPlace && input.previous.relations !== null ? buildSchema(input.projection, input.previous.version) : undefined;
  const movable = (name: string) => {
    const found = existing.get(name);
    return found !== undefined && !found.ours && MOVABLE[found.kind] !== undefined;
  };
  const moving = movedTo ? (input.previous?.relations ?? []).filter(movable) : [];
  for (const name of input.nextRelations) {
    const found = existing.get(name);
    if (found && !found.ours && !moving.includes(name)) throw input.nameTaken(read(name));
  }
  const nextSchema = input.nextSchema;
  const views = nextSchema === null ? [] : input.nextRelations;
  const ours = input.existing.filter((r) => r.ours).map((r) => r.name);
  for (const name of moving)
    statements.push({ sql: `ALTER ${MOVABLE[existing.get(name)!.kind]} ${read(name)} SET SCHEMA ${quote(movedTo!)}` });
  // A view of ours the next build no longer has goes; one it keeps is replaced in place (its grants and the
  // application's objects on it stay), or dropped and made again when its columns changed.
  for (const name of ours.filter((n) => !views.includes(n))) statements.push({ sql: `DROP VIEW ${read(name)}` });
  for (const name of views) {
    const create = `VIEW ${read(name)} AS SELECT * FROM ${quote(nextSchema!)}.${quote(name)}`;
    statements.push(
      ours.includes(name)
        ? { sql: `CREATE OR REPLACE ${create}`, orElse: [`DROP VIEW ${read(name)}`, `CREATE ${create}`] }
        : { sql: `CREATE ${create}` },
    );
  }
  // Every relation a statement changes is taken before the first one runs, so no ALTER waits with readers queueing
  // behind it; PostgreSQL's LOCK TABLE takes tables and views only.
  const changed = [...new Set([...moving, ...ours])];
  const lockable = (name: string) => ['r', 'p', 'v'].includes(existing.get(name)?.kind ?? '');
  const locks = changed.filter(lockable).map(read);
  const guarded = changed
    .filter((name) => !lockable(name))
    .map((name) => ({ relation: read(name), alter: MOVABLE[existing.get(name)!.kind]! }));
  return { locks, guarded, statements, views, movedTo };
}
