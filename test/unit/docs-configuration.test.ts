import { describe, expect, it } from 'vitest';
import { RUNNER_SETTINGS, SETTINGS } from '../../src/config.js';
import { markedRegion, writeMarkedRegion } from '../support/docs.js';

/**
 * The settings table of docs/configuration.md is generated from src/config.ts, the one table of settings: flag,
 * variable, default, the library's option and the meaning. When a setting changes, regenerate it with
 *   UPDATE_DOCS=1 npx vitest run test/unit/docs-configuration.test.ts
 */
const PAGE = 'docs/configuration.md';

/** The library's option for a setting, or a dash for the settings only the CLI reads (the database, the folder, …). */
const runnerOption = (key: string) => ((RUNNER_SETTINGS as readonly string[]).includes(key) ? `\`${key}\`` : '—');

function settingsTable(): string {
  const rows = SETTINGS.map(
    (s) =>
      `| \`--${s.flag}\` | \`${s.env}\` | ${s.default === undefined ? '—' : `\`${s.default}\``} | ${runnerOption(s.key)} | ${s.description} |`,
  );
  return ['| flag | environment variable | default | `new Runner` option | meaning |', '|---|---|---|---|---|', ...rows, ''].join('\n');
}

describe('the configuration page', () => {
  if (process.env.UPDATE_DOCS === '1') writeMarkedRegion(PAGE, 'settings', settingsTable());

  it('holds the settings table generated from src/config.ts', () => {
    expect(markedRegion(PAGE, 'settings'), `regenerate: UPDATE_DOCS=1 npx vitest run test/unit/docs-configuration.test.ts`).toBe(
      settingsTable(),
    );
  });

  it.each(SETTINGS.map((s) => [s.flag, s.env] as const))('names --%s and %s', (flag, env) => {
    const region = markedRegion(PAGE, 'settings');
    expect(region).toContain(`| \`--${flag}\` | \`${env}\` |`);
  });
});
