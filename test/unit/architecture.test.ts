import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

/**
 * ARCHITECTURE.md's rules, checked: lower rooms never import from higher ones, the floor's files (errors.ts, the
 * event types) import from no room at all, and no file of src/ reaches itself through its imports. A new arrow up or
 * a new circle fails here with the files and the imports, instead of quietly tangling the rooms.
 */
const SRC = path.resolve(import.meta.dirname, '../../src');
const LOWER = ['shared', 'projection', 'store', 'db', 'metrics'];
const HIGHER = ['sources', 'high-water', 'versions', 'projector', 'replay', 'ownership', 'wait', 'runner', 'cli'];
/** The floor: files at the top of src/ that every room may import and that import none. */
const FLOOR = ['errors.ts', 'events.ts'];

/** Every relative import and re-export of `file` (a path relative to src/), as src/-relative .ts paths. */
function importsOfFile(file: string): Array<{ file: string; target: string }> {
  const dir = path.dirname(path.join(SRC, file));
  return [...readFileSync(path.join(SRC, file), 'utf8').matchAll(/from '(\.{1,2}\/[^']+)'/g)].map((m) => ({
    file,
    target: path.relative(SRC, path.resolve(dir, m[1]!)),
  }));
}

function importsOf(room: string): Array<{ file: string; target: string }> {
  return readdirSync(path.join(SRC, room))
    .filter((f) => f.endsWith('.ts'))
    .flatMap((f) => importsOfFile(`${room}/${f}`));
}

/** Every .ts file under src/, relative to it. */
function sourceFiles(): string[] {
  return readdirSync(SRC, { recursive: true, encoding: 'utf8' })
    .filter((f) => f.endsWith('.ts'))
    .map((f) => f.split(path.sep).join('/'));
}

/**
 * The circles of a graph: its strongly connected components of more than one node, or of one node that imports
 * itself (Tarjan's algorithm), each sorted, for a readable failure.
 */
function circles(edges: ReadonlyMap<string, readonly string[]>): string[][] {
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const found: string[][] = [];
  const visit = (node: string): void => {
    index.set(node, index.size);
    low.set(node, index.get(node)!);
    stack.push(node);
    onStack.add(node);
    for (const next of edges.get(node) ?? []) {
      if (!index.has(next)) {
        visit(next);
        low.set(node, Math.min(low.get(node)!, low.get(next)!));
      } else if (onStack.has(next)) low.set(node, Math.min(low.get(node)!, index.get(next)!));
    }
    if (low.get(node) !== index.get(node)) return;
    const component: string[] = [];
    let member: string;
    do {
      member = stack.pop()!;
      onStack.delete(member);
      component.push(member);
    } while (member !== node);
    if (component.length > 1 || edges.get(node)?.includes(node)) found.push(component.sort());
  };
  for (const node of edges.keys()) if (!index.has(node)) visit(node);
  return found;
}

describe('the rooms of src/', () => {
  it.each(LOWER)('%s imports nothing from the rooms above it', (room) => {
    const imports = importsOf(room);
    const upward = imports.filter(({ target }) => HIGHER.includes(target.split(path.sep)[0]!));
    expect(upward).toEqual([]);
  });

  it.each(FLOOR)('%s (the floor) imports from no room', (file) => {
    expect(importsOfFile(file).filter(({ target }) => target.includes(path.sep))).toEqual([]);
  });

  it('no file of src/ imports itself back through other files', () => {
    const files = sourceFiles();
    const edges = new Map(
      files.map((file) => [file, importsOfFile(file).map(({ target }) => target.replace(/\.js$/, '.ts').split(path.sep).join('/'))]),
    );
    expect(circles(edges)).toEqual([]);
  });

  it('sees the imports it checks (a broken pattern would pass everything)', () => {
    expect(importsOf('db').map((i) => i.target)).toContain('errors.js');
    expect(importsOf('runner').some((i) => i.target.startsWith('projector'))).toBe(true);
    expect(importsOfFile('errors.ts').map((i) => i.target)).toContain('events.js');
    expect(sourceFiles()).toContain('projector/projector.ts');
  });

  it.each([
    { graph: { a: ['b'], b: ['c'], c: [] }, expected: [] },
    { graph: { a: ['b'], b: ['a'] }, expected: [['a', 'b']] },
    { graph: { a: ['a'] }, expected: [['a']] },
    { graph: { a: ['b'], b: ['c'], c: ['a'], d: ['a'] }, expected: [['a', 'b', 'c']] },
    { graph: { a: ['b', 'c'], b: ['d'], c: ['d'], d: [] }, expected: [] },
    {
      graph: { a: ['b'], b: ['a'], c: ['d'], d: ['c'] },
      expected: [
        ['a', 'b'],
        ['c', 'd'],
      ],
    },
  ])('finds the circles of $graph', ({ graph, expected }) => {
    expect(circles(new Map(Object.entries(graph)))).toEqual(expected);
  });

  it.each(['sources', 'high-water', 'versions', 'projector', 'replay', 'ownership', 'wait', 'metrics', 'runner'])(
    'every file of %s is named in ARCHITECTURE.md (its room or its job)',
    (room) => {
      const doc = readFileSync(path.resolve(SRC, '../ARCHITECTURE.md'), 'utf8');
      const files = readdirSync(path.join(SRC, room)).filter((f) => f.endsWith('.ts'));
      expect(files.filter((f) => !doc.includes(`\`${f}\``) && !doc.includes(`${room}/${f}`))).toEqual([]);
    },
  );

  it('every room is named in ARCHITECTURE.md', () => {
    const doc = readFileSync(path.resolve(SRC, '../ARCHITECTURE.md'), 'utf8');
    const rooms = readdirSync(SRC, { withFileTypes: true })
      .filter((d) => d.isDirectory())
      .map((d) => d.name);
    expect(rooms.sort()).toEqual([...LOWER, ...HIGHER].sort());
    for (const room of rooms) expect(doc).toContain(`src/${room}/`);
  });
});
