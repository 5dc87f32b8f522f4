import type pg from 'pg';
import { ProjectionLoadError } from '../errors.js';
import type { StoredEvent } from '../store/types.js';

/**
 * A projection: a plain object (as in Emmett), default-exported by an ES module. `handle` and `handleBatch` run
 * inside the transaction that also moves the checkpoint, so read-model writes in the same database are applied
 * exactly once.
 */
export interface Projection {
  /** [a-z][a-z0-9_]*, unique among the loaded projections. */
  name: string;
  /**
   * The version of this code's read model (a positive integer, default 1). Deploying a higher one builds the new read
   * model from zero beside the live one and switches to it once it has caught up (blue/green, src/versions/).
   */
  version?: number;
  /** Deliver only these event types; other events still advance the checkpoint. */
  eventTypes?: string[];
  /** Idempotent: create read-model tables. Runs before the projection starts. */
  setup?(db: pg.ClientBase): Promise<void>;
  /** Wipe the read model (used by replay, in the same transaction as the checkpoint reset). */
  reset?(db: pg.ClientBase): Promise<void>;
  handle?(event: StoredEvent, tx: pg.ClientBase): Promise<void>;
  /** Optional alternative to `handle`: one call per batch, for multi-row writes. */
  handleBatch?(events: StoredEvent[], tx: pg.ClientBase): Promise<void>;
  /**
   * What to do with an event whose handler still fails after --handler-retries: 'stop' (default) marks the
   * projection failed at it; 'skip' writes it to projection_dead_letters and goes on. --on-error overrides it.
   */
  onError?: ErrorPolicy;
}

/**
 * Where a projection stands in this daemon: the `state` column of its checkpoint row, `status`, and the
 * projection_runner_projection_state metric share these names. `rebuilding`: a new version built beside the live one.
 */
export const PROJECTION_STATES = ['running', 'catching_up', 'failed', 'stopped', 'replaying', 'rebuilding'] as const;
export type ProjectionState = (typeof PROJECTION_STATES)[number];

export const ERROR_POLICIES = ['stop', 'skip'] as const;
export type ErrorPolicy = (typeof ERROR_POLICIES)[number];

/** How a new version, once built beside the live one, becomes live: by itself, or on `projection-runner switch`. */
export const SWITCH_MODES = ['auto', 'manual'] as const;
export type SwitchMode = (typeof SWITCH_MODES)[number];

/** Identity function that gives a projection object its type. */
export function defineProjection<P extends Projection>(projection: P): P {
  return projection;
}

const NAME = /^[a-z][a-z0-9_]*$/;
const MAX_NAME_LENGTH = 50;

/** Checks the shape of a loaded module's default export; `source` names it in the error. */
export function validateProjection(candidate: unknown, source: string): Projection {
  if (candidate === null || typeof candidate !== 'object') {
    throw new ProjectionLoadError(source, 'the module has no default export object (export default defineProjection({...}))');
  }
  const p = candidate as Partial<Projection>;
  if (typeof p.name !== 'string' || !NAME.test(p.name)) {
    throw new ProjectionLoadError(source, `name must match ${NAME} (got ${JSON.stringify(p.name)})`);
  }
  // A later version lives in schema <name>_v<N>: PostgreSQL cuts identifiers at 63 bytes, so leave room for it.
  if (p.name.length > MAX_NAME_LENGTH) {
    throw new ProjectionLoadError(source, `name must be at most ${MAX_NAME_LENGTH} characters (got ${p.name.length}: ${p.name})`);
  }
  if (typeof p.handle !== 'function' && typeof p.handleBatch !== 'function') {
    throw new ProjectionLoadError(source, `projection "${p.name}" has no handle(event, tx) function`);
  }
  if (p.eventTypes !== undefined && (!Array.isArray(p.eventTypes) || p.eventTypes.some((t) => typeof t !== 'string'))) {
    throw new ProjectionLoadError(source, `projection "${p.name}": eventTypes must be an array of strings`);
  }
  if (p.onError !== undefined && !(ERROR_POLICIES as readonly unknown[]).includes(p.onError)) {
    throw new ProjectionLoadError(
      source,
      `projection "${p.name}": onError must be one of ${ERROR_POLICIES.join(', ')} (got ${JSON.stringify(p.onError)})`,
    );
  }
  if (p.version !== undefined && !(Number.isSafeInteger(p.version) && p.version >= 1)) {
    throw new ProjectionLoadError(source, `projection "${p.name}": version must be a positive integer (got ${JSON.stringify(p.version)})`);
  }
  for (const hook of ['setup', 'reset'] as const) {
    if (p[hook] !== undefined && typeof p[hook] !== 'function') {
      throw new ProjectionLoadError(source, `projection "${p.name}": ${hook} must be a function`);
    }
  }
  return p as Projection;
}

export function checkUniqueNames(projections: Array<{ projection: Projection; source: string }>): void {
  const seen = new Map<string, string>();
  for (const { projection, source } of projections) {
    const other = seen.get(projection.name);
    if (other) throw new ProjectionLoadError(source, `duplicate projection name "${projection.name}" (also in ${other})`);
    seen.set(projection.name, source);
  }
}
