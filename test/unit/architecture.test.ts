import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

/**
 * ARCHITECTURE.md's rule, checked: lower rooms never import from higher ones. A new arrow up fails here with the
 * file and the import, instead of quietly tangling the rooms.
 */
const SRC = path.resolve(import.meta.dirname, '../../src');
const LOWER = ['shared', 'projection', 'store', 'db', 'metrics'];
const HIGHER = ['sources', 'high-water', 'versions', 'projector', 'replay', 'ownership', 'wait', 'runner', 'cli'];

function importsOf(room: string): Array<{ file: string; target: string }> {
  const dir = path.join(SRC, room);
  return readdirSync(dir)
    .filter((f) => f.endsWith('.ts'))
    .flatMap((f) =>
      [...readFileSync(path.join(dir, f), 'utf8').matchAll(/from '(\.{1,2}\/[^']+)'/g)].map((m) => ({
        file: `${room}/${f}`,
        target: path.relative(SRC, path.resolve(dir, m[1]!)),
      })),
    );
}

describe('the rooms of src/', () => {
  it.each(LOWER)('%s imports nothing from the rooms above it', (room) => {
    const imports = importsOf(room);
    const upward = imports.filter(({ target }) => HIGHER.includes(target.split(path.sep)[0]!));
    expect(upward).toEqual([]);
  });

  it('sees the imports it checks (a broken pattern would pass everything)', () => {
    expect(importsOf('db').map((i) => i.target)).toContain('errors.js');
    expect(importsOf('runner').some((i) => i.target.startsWith('projector'))).toBe(true);
  });

  it('every room is named in ARCHITECTURE.md', () => {
    const doc = readFileSync(path.resolve(SRC, '../ARCHITECTURE.md'), 'utf8');
    const rooms = readdirSync(SRC, { withFileTypes: true })
      .filter((d) => d.isDirectory())
      .map((d) => d.name);
    expect(rooms.sort()).toEqual([...LOWER, ...HIGHER].sort());
    for (const room of rooms) expect(doc).toContain(`src/${room}/`);
  });
});
