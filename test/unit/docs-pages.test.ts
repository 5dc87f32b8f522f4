import { existsSync, statSync } from 'node:fs';
import path from 'node:path';
import client from 'prom-client';
import { describe, expect, it } from 'vitest';
import { SETTINGS } from '../../src/config.js';
import { RunnerMetrics } from '../../src/metrics/registry.js';
import { REPO } from '../support/child-runner.js';
import { anchorsOf, manualPages, markedRegion, readPage } from '../support/docs.js';
import { alertRules } from '../support/metric-names.js';

/**
 * The manual against the code: every link between pages resolves, every metric, alert and environment variable a page
 * names exists, the metrics and alerts tables list exactly what the product ships, and the README stays a front door.
 * (Flags and commands are checked against the CLI itself: test/integration/docs/docs-cli.test.ts.)
 */
const pages = manualPages();
const metrics = new RunnerMetrics().registry.getMetricsAsArray().filter((m) => m.name.startsWith('projection_runner_'));
const exported = new Set(
  metrics.flatMap((m) => (m instanceof client.Histogram ? [m.name, `${m.name}_bucket`, `${m.name}_sum`, `${m.name}_count`] : [m.name])),
);
const typeOf = (m: (typeof metrics)[number]) =>
  m instanceof client.Histogram ? 'histogram' : m instanceof client.Counter ? 'counter' : 'gauge';

/** Names of the form projection_runner_…, except templates such as `projection_runner_notify_<channel>`. */
function metricNamesOn(text: string): string[] {
  return [...text.matchAll(/\bprojection_runner_[a-z0-9_]*[a-z0-9](?![a-z0-9_<])/g)].map((m) => m[0]);
}

describe('the manual', () => {
  it('has a page per subject under docs/, each reachable from the README', () => {
    const readme = readPage('README.md');
    for (const page of pages.filter((p) => p.startsWith('docs/'))) expect(readme, `README links ${page}`).toContain(`](${page})`);
  });

  it.each(pages)('%s: every relative link resolves, anchors included', (page) => {
    const text = readPage(page).replace(/^```[^\n]*\n[\s\S]*?^```/gm, '');
    const broken: string[] = [];
    for (const [, target] of text.matchAll(/\]\(([^)\s]+)\)/g)) {
      if (/^[a-z]+:/.test(target!)) continue; // https:, mailto:
      const [file, anchor] = target!.split('#') as [string, string | undefined];
      const resolved = file ? path.join(path.dirname(path.join(REPO, page)), file) : path.join(REPO, page);
      if (!existsSync(resolved)) broken.push(`${target} (no file)`);
      else if (anchor !== undefined && statSync(resolved).isFile() && !anchorsOf(readPage(path.relative(REPO, resolved))).has(anchor))
        broken.push(`${target} (no such heading)`);
    }
    expect(broken).toEqual([]);
  });

  it.each(pages)('%s: names only metrics the runner exports', (page) => {
    expect(metricNamesOn(readPage(page)).filter((n) => !exported.has(n))).toEqual([]);
  });

  it.each(pages)('%s: names only environment variables that are settings', (page) => {
    const envs = new Set(SETTINGS.map((s) => s.env));
    const named = [...readPage(page).matchAll(/\bPROJECTION_RUNNER_[A-Z0-9_]*[A-Z0-9]\b/g)].map((m) => m[0]);
    expect(named.filter((n) => !envs.has(n))).toEqual([]);
  });

  it.each(pages.filter((p) => p !== 'CHANGELOG.md'))('%s: describes the product as it is, not how or when it was written', (page) => {
    const narration =
      /\b(now|nowadays|previously|anymore|used to|this session|earlier session|later session|last session|session before|final code|was tried|not kept)\b/i;
    expect(
      readPage(page)
        .split('\n')
        .filter((line) => narration.test(line)),
    ).toEqual([]);
  });

  it('the metrics table of docs/metrics.md lists every metric with its type and labels, and nothing else', () => {
    const rows = markedRegion('docs/metrics.md', 'metrics')
      .split('\n')
      .filter((r) => r.startsWith('| `'))
      .map((r) => r.split('|').map((c) => c.trim()));
    const documented = rows.map(([, name, type, labels]) => `${name!.replace(/`/g, '')} ${type} ${labels}`).sort();
    const actual = metrics
      .map((m) => `${m.name} ${typeOf(m)} ${(m as unknown as { labelNames: string[] }).labelNames.join(', ')}`.trim())
      .sort();
    expect(documented.map((d) => d.trim())).toEqual(actual);
  });

  it('the alerts table of docs/metrics.md lists every alert rule shipped, and nothing else', () => {
    const documented = [...markedRegion('docs/metrics.md', 'alerts').matchAll(/^\| `([A-Za-z]+)` \|/gm)].map((m) => m[1]);
    expect(documented.sort()).toEqual(
      alertRules()
        .map((r) => r.alert)
        .sort(),
    );
  });

  it('the README is a front door: at most 20 KB, with the set-up and test commands', () => {
    const readme = readPage('README.md');
    expect(Buffer.byteLength(readme)).toBeLessThanOrEqual(20 * 1024);
    expect(readme).toContain('npm install && npm run demo');
    expect(readme).toContain('npm test');
  });
});
