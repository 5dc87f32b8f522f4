/**
 * (1)–(3): the read limit and the replays as the user waits for them. The raw scan and each replay command (process
 * start, module loading and setup included) alternate round after round, so that a load that comes and goes on the
 * machine falls on all of them alike; each figure is the best of its rounds, and every ratio is taken within the run.
 */
import type pg from 'pg';
import { log, rawScan, replay } from './support.js';

export interface ReplayRun {
  events: number;
  /** The whole command. */
  seconds: number;
  /** The rebuild alone, from the CLI's summary line. */
  reportedSeconds: number;
  /** The highest of the rounds. */
  peakRssMb: number;
  rate: number;
}

export interface ScanAndReplays {
  rounds: number;
  scan: { events: number; seconds: number; rate: number };
  replays: Map<string, ReplayRun>;
}

export async function scanAndReplays(pool: pg.Pool, url: string, projections: string[], rounds = 2): Promise<ScanAndReplays> {
  await rawScan(pool); // warms the cache: every side then reads from memory
  let scan: ScanAndReplays['scan'] | undefined;
  const replays = new Map<string, ReplayRun>();
  for (let round = 1; round <= rounds; round++) {
    log(`(1) raw scan, round ${round} of ${rounds}`);
    const s = await rawScan(pool);
    if (!scan || s.events / s.seconds > scan.rate) scan = { ...s, rate: s.events / s.seconds };
    for (const name of projections) {
      log(`replay ${name} through the CLI, round ${round} of ${rounds}`);
      const r = await replay(name, url);
      const best = replays.get(name);
      const peakRssMb = Math.max(r.peakRssMb, best?.peakRssMb ?? 0);
      const rate = r.events / r.seconds;
      if (!best || rate > best.rate) replays.set(name, { ...r, peakRssMb, rate });
      else best.peakRssMb = peakRssMb;
    }
  }
  return { rounds, scan: scan!, replays };
}
