import { readFileSync } from 'node:fs';
import path from 'node:path';
import { parse } from 'yaml';
import { REPO } from './child-runner.js';

/** Every PromQL expression shipped with the product: dashboard panels and alert rules. */
export function dashboardExpressions(): string[] {
  const dashboard = JSON.parse(readFileSync(path.join(REPO, 'grafana/dashboards/projection-runner.json'), 'utf8'));
  return dashboard.panels.flatMap((p: { targets: Array<{ expr: string }> }) => p.targets.map((t) => t.expr));
}

export function alertRules(): Array<{ alert: string; expr: string }> {
  const alerts = parse(readFileSync(path.join(REPO, 'prometheus/alerts.yml'), 'utf8'));
  return alerts.groups.flatMap((g: { rules: Array<{ alert: string; expr: string }> }) => g.rules);
}

/** Metric names an expression refers to (identifiers that are not functions, keywords or label names). */
export function metricNamesIn(expr: string): string[] {
  const withoutLabels = expr.replace(/\{[^}]*\}/g, '').replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, '');
  const tokens: string[] = [];
  for (const match of withoutLabels.matchAll(/[a-zA-Z_:][a-zA-Z0-9_:]*/g)) {
    const rest = withoutLabels.slice(match.index! + match[0].length);
    if (!/^\s*\(/.test(rest)) tokens.push(match[0]); // a function call, not a metric
  }
  const keywords = new Set(['and', 'or', 'unless', 'by', 'without', 'bool', 'offset', 'le', 'inf', 'nan']);
  return [...new Set(tokens.filter((t) => !keywords.has(t.toLowerCase()) && !/^\d/.test(t) && !/^[smhdwy]$/.test(t)))];
}
