/** Replay progress as text: pure, so the numbers are testable without a terminal. */

/**
 * How often `replay` and `rebuild` read their request while they follow it: the end is seen within this (a query
 * by key each time). At 200 ms the wait for the last look was a tenth of a 500,000-event replay as the user waits for
 * it; the progress itself is written at most every REPLAY_REPORT_INTERVAL_MS (250 ms).
 */
export const FOLLOW_INTERVAL_MS = 25;
export interface Progress {
  applied: number;
  target: number;
  elapsedMs: number;
}

export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds)) return '--';
  if (seconds < 60) return `${Math.round(seconds)}s`;
  const m = Math.floor(seconds / 60);
  return m < 60
    ? `${m}m${String(Math.round(seconds % 60)).padStart(2, '0')}s`
    : `${Math.floor(m / 60)}h${String(m % 60).padStart(2, '0')}m`;
}

/** 47998 → "47,998": counts a person reads at a glance. */
export const formatCount = (n: number): string => Math.round(n).toLocaleString('en-US');

/**
 * The bar, the count against the target, the rate and the ETA. Never over 100 %: writers that go on while a replay or
 * a build runs move its target (the head it started at) on; then the target shown is what was applied, and how far it
 * moved is said (`47,998 / 47,998 (+2,213 since start)`).
 */
export function formatProgress({ applied, target, elapsedMs }: Progress, width = 30): string {
  const shown = Math.max(target, applied);
  const moved = shown - target;
  const fraction = shown > 0 ? applied / shown : 1;
  const filled = Math.round(fraction * width);
  const rate = elapsedMs > 0 ? applied / (elapsedMs / 1000) : 0;
  const eta = rate > 0 ? Math.max(0, shown - applied) / rate : Number.POSITIVE_INFINITY;
  return (
    `[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${(fraction * 100).toFixed(1).padStart(5)}% ` +
    `${formatCount(applied)} / ${formatCount(shown)}${moved > 0 ? ` (+${formatCount(moved)} since start)` : ''} events  ` +
    `${formatCount(rate)} ev/s  ETA ${fraction >= 1 ? '0s' : formatDuration(eta)}`
  );
}

export function formatSummary(name: string, { applied, elapsedMs }: Progress, checkpoint: bigint | number): string {
  const seconds = elapsedMs / 1000;
  const rate = seconds > 0 ? Math.round(applied / seconds) : applied;
  return `replayed ${name}: ${applied} events in ${seconds.toFixed(1)}s (${rate} events/s), checkpoint at ${checkpoint}`;
}
