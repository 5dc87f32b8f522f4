import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { SETTINGS } from '../../../src/config.js';
import { REPO, runCli } from '../../support/child-runner.js';
import { codeOf, manualPages, readPage } from '../../support/docs.js';

/**
 * The manual against the CLI as it is: every command a page runs (`projection-runner NAME …`) exists, every flag a
 * page names is an option of the CLI (or of the tool the page shows: node, the benchmark, buildah), and a command line
 * of the manual passes each command only options it has. Read from the CLI's own --help, so it follows the code.
 */
const pages = manualPages();
/** Flags of other programs the manual shows: node's, buildah's, prettier's; the benchmark's are read from its sources. */
const OTHER_TOOLS = ['--import', '--max-semi-space-size', '--cpu-prof', '--trace-gc-nvp', '--isolation', '--check'];

const flagsIn = (text: string) => [...text.matchAll(/(?<![\w-])--[a-z][a-z0-9-]*/g)].map((m) => m[0]);

let commands: Map<string, Set<string>>;
let benchFlags: Set<string>;

beforeAll(async () => {
  const top = await runCli(['--help']);
  expect(top.code).toBe(0);
  const names = [...top.stdout.split('Commands:')[1]!.matchAll(/^ {2}([a-z][a-z-]*)/gm)].map((m) => m[1]!).filter((n) => n !== 'help');
  const helps = await Promise.all(names.map((name) => runCli([name, '--help'])));
  commands = new Map(names.map((name, i) => [name, new Set(flagsIn(helps[i]!.stdout))]));
  const bench = readdirSync(path.join(REPO, 'test/bench')).filter((f) => f.endsWith('.ts'));
  benchFlags = new Set(
    bench.flatMap((f) => {
      const source = readFileSync(path.join(REPO, 'test/bench', f), 'utf8');
      return [...source.matchAll(/flag\('([a-z-]+)'/g)].map((m) => `--${m[1]}`).concat(flagsIn(source.replace(/\/\/.*$/gm, '')));
    }),
  );
}, 120_000);

describe('the manual names only what the CLI has', () => {
  it('reads the commands and their options from the CLI', () => {
    expect([...commands.keys()]).toEqual(expect.arrayContaining(['migrate', 'run', 'status', 'replay', 'retry', 'skip', 'demo']));
    expect(commands.get('run')).toContain('--gap-timeout');
  });

  it.each(pages)('%s: every flag is an option of the CLI or of the tool shown', (page) => {
    const known = new Set([
      ...OTHER_TOOLS,
      ...benchFlags,
      ...SETTINGS.map((s) => `--${s.flag}`),
      ...[...commands.values()].flatMap((s) => [...s]),
    ]);
    expect(flagsIn(readPage(page)).filter((f) => !known.has(f))).toEqual([]);
  });

  it.each(pages)('%s: every command exists, and takes the options its command lines give it', (page) => {
    const wrong: string[] = [];
    for (const code of codeOf(readPage(page))) {
      for (const line of code.split('\n')) {
        for (const m of line.matchAll(/(?:^|[\s(])projection-runner ([a-z][a-z-]*)([^|;#&]*)/g)) {
          const options = commands.get(m[1]!);
          if (!options) wrong.push(`${m[1]}: no such command (${line.trim()})`);
          else for (const f of flagsIn(m[2]!)) if (!options.has(f)) wrong.push(`${m[1]} has no ${f} (${line.trim()})`);
        }
      }
    }
    expect(wrong).toEqual([]);
  });
});
