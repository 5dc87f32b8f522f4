/**
 * (7): the peak resident memory of a no-op replay through the CLI, the whole command, at two sizes of the store: the
 * store grown to `--memory-from` events (default 1,000,000) and replayed, then grown to `--memory-events` (default
 * 5,000,000; building it takes minutes) and replayed again. Memory that grows with the length of a replay shows as the
 * second peak above the first; the target is both under 200 MB and the second within 10 % of the first. The store
 * stays at the larger size afterwards, so this figure runs after those that read the main store.
 */
import type pg from 'pg';
import { flag, generate, log, replay } from './support.js';

export const MEMORY_FROM = flag('memory-from', 1_000_000);

type Row = [string, string, string];

export interface ReplayMemory {
  events: number;
  peakRssMb: number;
  /** The whole command's rate, for reference (the speed figures are (1)-(3)). */
  rate: number;
}

/** Grows the store to `events` (at least: a larger store stays as it is), in the shape `generate` writes. */
async function growTo(pool: pg.Pool, events: number): Promise<number> {
  const { rows } = await pool.query<{ n: string; m: string }>(
    'SELECT count(*)::text AS n, coalesce(max(global_position), 0)::text AS m FROM events',
  );
  const count = Number(rows[0]!.n);
  const max = Number(rows[0]!.m);
  if (count < events) {
    log(`(7) memory: growing the store from ${count} to ${events} events`);
    // generate's i past every position so far: its streams' positions never meet the existing ones.
    await generate(pool, max + 1, max + events - count);
  }
  return Math.max(count, events);
}

/** The no-op replay's peak RSS at each size (ascending), `sizes` from MEMORY_FROM and MEMORY_EVENTS. */
export async function replayMemory(pool: pg.Pool, url: string, sizes: number[]): Promise<{ rows: Row[]; results: ReplayMemory[] }> {
  const results: ReplayMemory[] = [];
  for (const size of [...new Set(sizes)].filter((s) => s > 0).sort((a, b) => a - b)) {
    await growTo(pool, size);
    log(`(7) memory: no-op replay of ${size} events through the CLI`);
    const run = await replay('noop', url);
    results.push({ events: run.events, peakRssMb: run.peakRssMb, rate: run.events / run.seconds });
  }
  const fmt = (n: number) => Math.round(n).toLocaleString('en-US');
  const first = results[0];
  const last = results.at(-1);
  const rows: Row[] = [
    [
      '(7) peak RSS, no-op replay, the whole command',
      results.map((r) => `${r.peakRssMb} MB at ${fmt(r.events)}`).join(', ') || 'no size given',
      first && last && last !== first
        ? `${(((last.peakRssMb - first.peakRssMb) / first.peakRssMb) * 100).toFixed(1)} % from ${fmt(first.events)} to ${fmt(last.events)} ` +
          `(target <= 200 MB, within 10 %); ${results.map((r) => `${fmt(r.rate)} events/s`).join(', ')}`
        : 'target <= 200 MB',
    ],
  ];
  return { rows, results };
}
