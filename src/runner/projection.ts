import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
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

export const ERROR_POLICIES = ['stop', 'skip'] as const;
export type ErrorPolicy = (typeof ERROR_POLICIES)[number];

/** Identity function that gives a projection object its type. */
export function defineProjection<P extends Projection>(projection: P): P {
  return projection;
}

const NAME = /^[a-z][a-z0-9_]*$/;

/** Checks the shape of a loaded module's default export; `source` names it in the error. */
export function validateProjection(candidate: unknown, source: string): Projection {
  if (candidate === null || typeof candidate !== 'object') {
    throw new ProjectionLoadError(source, 'the module has no default export object (export default defineProjection({...}))');
  }
  const p = candidate as Partial<Projection>;
  if (typeof p.name !== 'string' || !NAME.test(p.name)) {
    throw new ProjectionLoadError(source, `name must match ${NAME} (got ${JSON.stringify(p.name)})`);
  }
  if (typeof p.handle !== 'function' && typeof p.handleBatch !== 'function') {
    throw new ProjectionLoadError(source, `projection "${p.name}" has no handle(event, tx) function`);
  }
  if (p.eventTypes !== undefined && (!Array.isArray(p.eventTypes) || p.eventTypes.some((t) => typeof t !== 'string'))) {
    throw new ProjectionLoadError(source, `projection "${p.name}": eventTypes must be an array of strings`);
  }
  if (p.onError !== undefined && !(ERROR_POLICIES as readonly unknown[]).includes(p.onError)) {
    throw new ProjectionLoadError(source, `projection "${p.name}": onError must be one of ${ERROR_POLICIES.join(', ')} (got ${JSON.stringify(p.onError)})`);
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

const JAVASCRIPT = ['.js', '.mjs'];
const TYPESCRIPT = ['.ts', '.mts'];

/**
 * TypeScript projections load when tsx is installed (a development checkout): its loader is registered on demand.
 * A production install has no tsx and loads compiled .js/.mjs only.
 */
async function enableTypeScript(dir: string): Promise<void> {
  try {
    const api = (await import('tsx/esm/api')) as { register: () => unknown };
    api.register();
  } catch (error) {
    throw new ProjectionLoadError(dir, 'holds TypeScript projections but tsx is not installed: compile them to .js, or npm install tsx', {
      cause: error,
    });
  }
}

let typescriptEnabled = false;

/** Loads every projection module of `dir`: `.js`, `.mjs`, and `.ts`/`.mts` when tsx is available. */
export async function loadProjections(dir: string): Promise<Projection[]> {
  let files: string[];
  try {
    files = (await readdir(dir))
      .filter((f) => [...JAVASCRIPT, ...TYPESCRIPT].includes(path.extname(f)) && !f.endsWith('.d.ts'))
      .sort();
  } catch (error) {
    throw new ProjectionLoadError(dir, `cannot read the projections folder: ${(error as Error).message}`, { cause: error });
  }
  const isLoadedByTs = import.meta.url.endsWith('.ts');
  if (!isLoadedByTs && !typescriptEnabled && files.some((f) => TYPESCRIPT.includes(path.extname(f)))) {
    await enableTypeScript(dir);
    typescriptEnabled = true;
  }
  const loaded: Array<{ projection: Projection; source: string }> = [];
  for (const file of files) {
    const source = path.join(dir, file);
    let mod: { default?: unknown };
    try {
      mod = await import(pathToFileURL(path.resolve(source)).href);
    } catch (error) {
      throw new ProjectionLoadError(source, `failed to load: ${(error as Error).message}`, { cause: error });
    }
    loaded.push({ projection: validateProjection(mod.default, source), source });
  }
  if (loaded.length === 0) throw new ProjectionLoadError(dir, 'no projection modules (.js, .mjs, .ts) found');
  checkUniqueNames(loaded);
  return loaded.map((l) => l.projection);
}
