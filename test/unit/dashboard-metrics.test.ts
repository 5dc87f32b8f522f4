import client from 'prom-client';
import { describe, expect, it } from 'vitest';
import { RunnerMetrics } from '../../src/metrics/registry.js';
import { alertRules, dashboardExpressions, metricNamesIn } from '../support/metric-names.js';

const registry = new RunnerMetrics().registry;
const exported = new Set(
  registry.getMetricsAsArray().flatMap((m) => {
    const name = m.name;
    return m instanceof client.Histogram ? [name, `${name}_bucket`, `${name}_sum`, `${name}_count`] : [name];
  }),
);
// Synthesised by Prometheus for every scrape target, not by the runner.
exported.add('up');

describe('every PromQL expression we ship names only metrics the runner exports', () => {
  it('finds names in expressions (and would notice a renamed one)', () => {
    expect(metricNamesIn('histogram_quantile(0.99, sum by (le) (rate(projection_runner_gap_wait_seconds_bucket[5m])))')).toEqual([
      'projection_runner_gap_wait_seconds_bucket',
    ]);
    expect(metricNamesIn('projection_runner_lag_event{projection=~"$projection"} > 5')).toEqual(['projection_runner_lag_event']);
    expect(exported.has('projection_runner_lag_event')).toBe(false);
  });

  it.each(dashboardExpressions())('dashboard: %s', (expr) => {
    const names = metricNamesIn(expr);
    expect(names.length).toBeGreaterThan(0);
    expect(names.filter((n) => !exported.has(n))).toEqual([]);
  });

  it.each(alertRules().map((r) => [r.alert, r.expr]))('alert %s: %s', (_alert, expr) => {
    expect(metricNamesIn(expr).filter((n) => !exported.has(n))).toEqual([]);
  });

  it('the dashboard covers lag, gaps, late events, errors, dead letters, state, batch duration, memory and event-loop lag', () => {
    const all = dashboardExpressions().join('\n');
    for (const name of [
      'projection_runner_lag_events',
      'projection_runner_lag_seconds',
      'projection_runner_events_applied_total',
      'projection_runner_checkpoint_position',
      'projection_runner_head_position',
      'projection_runner_high_water_position',
      'projection_runner_gaps_open',
      'projection_runner_gap_oldest_age_seconds',
      'projection_runner_gaps_resolved_total',
      'projection_runner_gap_wait_seconds_bucket',
      'projection_runner_late_events_total',
      'projection_runner_handler_errors_total',
      'projection_runner_projection_state',
      'projection_runner_batch_duration_seconds_bucket',
      'process_resident_memory_bytes',
      'nodejs_eventloop_lag_p99_seconds',
      'projection_runner_dead_letters_total',
    ]) {
      expect(all).toContain(name);
    }
  });
});
