import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { SETTINGS } from '../../src/config.js';
import { REPO } from '../support/child-runner.js';

// The README's configuration table is what operators read: every setting appears in it with its variable and default.
const readme = readFileSync(path.join(REPO, 'README.md'), 'utf8');
const rows = readme.split('\n').filter((line) => line.startsWith('| `--'));

describe('README configuration table', () => {
  it.each(SETTINGS.map((s) => [s.flag, s.env, s.default] as const))('--%s (%s, default %s)', (flag, env, fallback) => {
    const row = rows.find((r) => r.startsWith(`| \`--${flag}\` |`));
    expect(row, `no README row for --${flag}`).toBeDefined();
    expect(row).toContain(`\`${env}\``);
    if (fallback !== undefined) expect(row).toContain(`\`${fallback}\``);
  });

  it('lists no setting that does not exist', () => {
    expect(rows.map((r) => /^\| `--([a-z-]+)`/.exec(r)![1]).sort()).toEqual(SETTINGS.map((s) => s.flag).sort());
  });
});
