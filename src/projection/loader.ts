import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { ProjectionLoadError } from '../errors.js';
import { checkUniqueNames, validateProjection, type Projection } from './projection.js';

/** The CLI's way to find projections: every module of a folder, each default-exporting one (see projection.ts). */

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
    files = (await readdir(dir)).filter((f) => [...JAVASCRIPT, ...TYPESCRIPT].includes(path.extname(f)) && !f.endsWith('.d.ts')).sort();
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
