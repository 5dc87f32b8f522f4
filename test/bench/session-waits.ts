/**
 * What a daemon's sessions wait on, sampled from pg_stat_activity (part of figure (13): the live path while
 * housekeeping catches up, and after). Every 20 ms (a light load beside what is measured, the same during and after)
 * one look at the daemon's active sessions: each is counted under its role (the `projection-runner:ROLE` application
 * name: `runner` for the projectors' batches, `tracker` for the high-water passes, `housekeeping`) and what it waits
 * on: `CPU` when it waits on nothing (running, or waiting for a core), else PostgreSQL's wait event type (`Lock`,
 * `LWLock`, `IO`, `Client` for the daemon's next message…).
 */
import pg from 'pg';
import { sleep } from '../../src/shared/time.js';

export interface WaitSample {
  /** Looks taken. */
  looks: number;
  /** `role wait` → how many looks found a session of that role in that state. */
  counts: Map<string, number>;
}

/** Samples until the returned `stop()`, which resolves with what was seen. */
export function sampleWaits(url: string, everyMs = 20): { stop: () => Promise<WaitSample> } {
  const sample: WaitSample = { looks: 0, counts: new Map() };
  let stopped = false;
  const done = (async () => {
    const client = new pg.Client({ connectionString: url });
    client.on('error', () => {});
    await client.connect();
    try {
      while (!stopped) {
        const { rows } = await client.query<{ role: string; wait: string }>(
          `SELECT split_part(application_name, ':', 2) AS role, coalesce(wait_event_type, 'CPU') AS wait
             FROM pg_stat_activity
            WHERE application_name LIKE 'projection-runner:%' AND state = 'active' AND pid <> pg_backend_pid()`,
        );
        sample.looks++;
        for (const { role, wait } of rows) sample.counts.set(`${role} ${wait}`, (sample.counts.get(`${role} ${wait}`) ?? 0) + 1);
        await sleep(everyMs);
      }
    } finally {
      await client.end();
    }
  })();
  return {
    stop: async () => {
      stopped = true;
      await done;
      return sample;
    },
  };
}

/** One role's states, as the percentage of looks that found it in each (the most frequent first), for a table cell. */
export function describeWaits(sample: WaitSample, role: string): string {
  const parts = [...sample.counts.entries()]
    .filter(([key]) => key.startsWith(`${role} `))
    .sort((a, b) => b[1] - a[1])
    .map(([key, n]) => `${key.slice(role.length + 1)} ${((100 * n) / Math.max(1, sample.looks)).toFixed(1)} %`);
  return parts.length > 0 ? parts.join(', ') : 'never active';
}
