/**
 * Figures (19) and (20): read your own writes. (19) commit → `waitFor` resolved at 200 appends/s beside the commit →
 * applied latency of the same run; (20) the CPU that 1,000 concurrent waits over one waiter add to a live run.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import type pg from 'pg';
import { ProjectionWaiter } from '../../src/wait/waiter.js';
import {
  LIVE_SECONDS,
  NATIVE_HEAD,
  PROJECTIONS,
  appendPings,
  cpuSecondsOf,
  log,
  measureLatency,
  percentile,
  type LatencyRun,
} from './support.js';

const RATE = 200;
const WAITS = 1_000;

type Row = [string, string, string];
const ms = (n: number) => `${n.toFixed(1)} ms`;

/**
 * The latency projection and `count - 1` more: half of all `count` take no Ping (`eventTypes: ['Unused']`: the wait
 * credits them through their filter), the others write a row per Ping as the latency projection does, or with
 * `quiet` take Ping and write nothing (their batches leave the checkpoint move in memory unless a wait needs it).
 * Returns the folder and the projection names.
 */
function waitedProjections(count: number, { quiet = false } = {}): { dir: string; names: string[] } {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'pr-bench-wait-'));
  writeFileSync(path.join(dir, 'latency.mjs'), `export { default } from '${pathToFileURL(path.join(PROJECTIONS, 'latency.js')).href}';\n`);
  const names = ['latency'];
  const filtering = Math.floor(count / 2);
  for (let i = 1; i < count; i++) {
    const name = `wait_${i}`;
    const body =
      i <= filtering
        ? `export default { name: '${name}', eventTypes: ['Unused'], async handleBatch() {} };\n`
        : quiet
          ? `export default { name: '${name}', eventTypes: ['Ping'], async handleBatch() {} };\n`
          : `export default {
             name: '${name}', eventTypes: ['Ping'],
             async setup(db) { await db.query('CREATE TABLE IF NOT EXISTS ${name} (position bigint PRIMARY KEY)'); },
             async handleBatch(events, tx) {
               await tx.query('INSERT INTO ${name} SELECT unnest($1::bigint[]) ON CONFLICT DO NOTHING', [events.map((e) => e.globalPosition.toString())]);
             },
           };\n`;
    writeFileSync(path.join(dir, `${name}.mjs`), body);
    names.push(name);
  }
  return { dir, names };
}

const summary = (values: number[]) => {
  const sorted = [...values].sort((a, b) => a - b);
  return { samples: sorted.length, p50: percentile(sorted, 50), p99: percentile(sorted, 99), max: sorted.at(-1) ?? Number.NaN };
};

/** A live run at RATE pings/s against a daemon running `projections`, each ping written by `write`. */
const liveRun = (pool: pg.Pool, url: string, { dir, names }: { dir: string; names: string[] }, write: LatencyRun['write']) =>
  measureLatency(pool, url, { projections: dir, caughtUp: names, headSql: NATIVE_HEAD, rate: RATE, write });

/**
 * (19): each ping's writer waits for its own position, as an application does before it reads. `quiet`: the
 * projections that take Ping besides the latency one write nothing for it (figure (23)).
 */
export async function waitLatency(pool: pg.Pool, url: string, count: number, { quiet = false } = {}) {
  const projections = waitedProjections(count, { quiet });
  const { dir, names } = projections;
  const waiter = new ProjectionWaiter({ connectionString: url });
  const append = appendPings(pool);
  const resolved: number[] = [];
  const waits: Array<Promise<void>> = [];
  try {
    const applied = await liveRun(pool, url, projections, async (i) => {
      const r = await append(i);
      waits.push(
        waiter
          .waitFor(r.position, { projections: names, timeoutMs: 60_000 })
          .then(() => void resolved.push(Math.max(0, Date.now() - r.committedAt))),
      );
      return r;
    });
    await Promise.all(waits);
    return { projections: count, quiet, applied, waited: summary(resolved) };
  } finally {
    await waiter.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * (20): the same live run twice, without waits and with `WAITS` waits pending throughout, each waiting for the
 * position after the last ping written and waiting again once it resolves (a thousand requests, each reading its
 * write). Daemon and PostgreSQL CPU per second of each, and the waiter's sessions seen during the run.
 */
export async function manyWaitsCpu(pool: pg.Pool, url: string) {
  const projections = waitedProjections(1);
  const { dir, names } = projections;
  try {
    const append = appendPings(pool);
    const alone = await liveRun(pool, url, projections, append);

    const waiter = new ProjectionWaiter({ connectionString: url });
    // The waits start at the head: each waits for a ping not written yet.
    let last = BigInt((await pool.query(NATIVE_HEAD)).rows[0].m);
    let running = true;
    let resolved = 0;
    let sessions = 0;
    const waiting = Array.from({ length: WAITS }, async () => {
      while (running) {
        if (await waiter.waitFor(last + 1n, { projections: names, timeoutMs: 60_000 }).catch(() => undefined)) resolved++;
      }
    });
    // The CPU of this database's backends by who uses them (the waiter's, the daemon's), at the first and last ping:
    // unlike the machine-wide PostgreSQL figure, it leaves out other clusters on a shared machine.
    const backends = async () => {
      const { rows } = await pool.query<{ pid: number; app: string }>(
        `SELECT pid, application_name AS app FROM pg_stat_activity WHERE datname = current_database() AND application_name LIKE 'projection-runner%'`,
      );
      const cpu = { waiter: 0, daemon: 0 };
      for (const r of rows) cpu[r.app === 'projection-runner waiter' ? 'waiter' : 'daemon'] += cpuSecondsOf(r.pid);
      return { cpu, waiters: rows.filter((r) => r.app === 'projection-runner waiter').length, at: performance.now() };
    };
    const total = LIVE_SECONDS * RATE;
    let first: Awaited<ReturnType<typeof backends>> | undefined;
    let end: Awaited<ReturnType<typeof backends>> | undefined;
    const withWaits = await liveRun(pool, url, projections, async (i) => {
      const r = await append(i);
      if (BigInt(r.position) > last) last = BigInt(r.position);
      if (i === 0 || i === total - 1 || i % RATE === 0) {
        const seen = await backends();
        sessions = Math.max(sessions, seen.waiters);
        if (i === 0) first = seen;
        if (i === total - 1) end = seen;
      }
      return r;
    });
    const seconds = first && end ? (end.at - first.at) / 1000 : Number.NaN;
    const backendCores =
      first && end
        ? { waiter: (end.cpu.waiter - first.cpu.waiter) / seconds, daemon: (end.cpu.daemon - first.cpu.daemon) / seconds }
        : undefined;
    running = false;
    // The last waits are for a ping never written: closing the waiter rejects them.
    await waiter.close();
    await Promise.all(waiting);
    log(`(20) ${resolved} waits resolved in ${LIVE_SECONDS} s`);
    return { alone, withWaits, sessions, resolved, backendCores };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The table rows of (19) and (20). */
export function waitRows(
  latency: Array<Awaited<ReturnType<typeof waitLatency>>>,
  cpu: Awaited<ReturnType<typeof manyWaitsCpu>> | undefined,
): Row[] {
  const rows: Row[] = [];
  for (const { projections, quiet, applied, waited } of latency) {
    rows.push([
      quiet
        ? `(23) commit -> waitFor resolved, ${projections} projections, ${projections - 1 - Math.floor(projections / 2)} of them writing nothing for the type`
        : `(19) commit -> waitFor resolved, ${projections} projection${projections === 1 ? '' : 's'}`,
      `p50 ${ms(waited.p50)}, p99 ${ms(waited.p99)}, max ${ms(waited.max)}`,
      `applied (same run): p50 ${ms(applied.p50)}, p99 ${ms(applied.p99)}; p50 +${ms(waited.p50 - applied.p50)} ` +
        `(${waited.samples} appends at ${RATE}/s, half the projections filter Ping out; target p99 <= 25 ms, p50 within 2 ms)`,
    ]);
  }
  if (cpu) {
    const ratio = (a: number, b: number) => (b > 0 ? (a / b).toFixed(2) : 'n/a');
    rows.push([
      `(20) CPU with ${WAITS.toLocaleString('en-US')} waits pending, one waiter`,
      `daemon ${cpu.withWaits.cpu.daemon.toFixed(2)}, PostgreSQL ${cpu.withWaits.cpu.postgres.toFixed(2)}, waiting process ${cpu.withWaits.cpu.writer.toFixed(2)} cores`,
      `no waits (same run): daemon ${cpu.alone.cpu.daemon.toFixed(2)}, PostgreSQL ${cpu.alone.cpu.postgres.toFixed(2)}, writer ${cpu.alone.cpu.writer.toFixed(2)}; ` +
        `${ratio(cpu.withWaits.cpu.daemon + cpu.withWaits.cpu.postgres, cpu.alone.cpu.daemon + cpu.alone.cpu.postgres)} x (target <= 1.2 x); ` +
        `waiter sessions ${cpu.sessions} (target 1); ${cpu.resolved.toLocaleString('en-US')} waits resolved at ${RATE}/s`,
    ]);
    if (cpu.backendCores) {
      rows.push([
        "(20) this database's backends during the waits",
        `the waiter's ${cpu.backendCores.waiter.toFixed(3)}, the daemon's ${cpu.backendCores.daemon.toFixed(3)} cores`,
        `the waiter's backend is ${((cpu.backendCores.waiter / Math.max(1e-9, cpu.backendCores.daemon)) * 100).toFixed(0)} % of the daemon's (other clusters on the machine left out)`,
      ]);
    }
  }
  return rows;
}
