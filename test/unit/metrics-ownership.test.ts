import client from 'prom-client';
import { describe, expect, it } from 'vitest';
import { RunnerMetrics } from '../../src/metrics/registry.js';
import { PROJECTION_STATES } from '../../src/projection/projection.js';

/** Every series of every metric with a `projection` label, for one projection. */
async function seriesOf(metrics: RunnerMetrics, projection: string): Promise<string[]> {
  metrics.attachLagSource(undefined); // no scrape-time lag: only what was set
  const found: string[] = [];
  for (const metric of await metrics.registry.getMetricsAsJSON()) {
    for (const value of metric.values) {
      if (value.labels.projection === projection) found.push(`${metric.name}${JSON.stringify(value.labels)}`);
    }
  }
  return found;
}

describe('RunnerMetrics.forgetProjection', () => {
  it('removes every series of every per-projection metric, and only those of that projection', async () => {
    const metrics = new RunnerMetrics();
    const perProjection = metrics.registry
      .getMetricsAsArray()
      .filter((m) => (m as unknown as { labelNames: string[] }).labelNames.includes('projection'));
    // A metric added later with a projection label is covered too: every one of them gets series here.
    expect(perProjection.length).toBeGreaterThanOrEqual(7);
    for (const projection of ['kept', 'gone']) {
      for (const metric of perProjection) {
        const labelNames = (metric as unknown as { labelNames: string[] }).labelNames;
        for (const state of PROJECTION_STATES) {
          const labels = Object.fromEntries(labelNames.map((l) => [l, l === 'projection' ? projection : l === 'state' ? state : 'x']));
          if (metric instanceof client.Gauge) metric.set(labels, 1);
          else if (metric instanceof client.Counter) metric.inc(labels, 1);
          else if (metric instanceof client.Histogram || metric instanceof client.Summary) metric.observe(labels, 1);
          else throw new Error(`unexpected metric type: ${metric.constructor.name}`);
        }
      }
    }
    const keptBefore = await seriesOf(metrics, 'kept');
    expect(await seriesOf(metrics, 'gone')).toHaveLength(keptBefore.length);

    metrics.forgetProjection('gone');
    expect(await seriesOf(metrics, 'gone')).toEqual([]);
    expect(await seriesOf(metrics, 'kept')).toEqual(keptBefore);
  });
});
