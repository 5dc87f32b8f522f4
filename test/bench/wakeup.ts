import pg from 'pg';
import { EventStore } from '../../src/index.js';
import { APPLICATION_NAME } from '../../src/db/connection.js';
import { freePort } from '../../src/db/postgres-server.js';
import { storeNames } from '../../src/db/identifiers.js';
import { notifyTriggerSql } from '../../src/db/notify-trigger.js';
import {
  cpuSecondsOf,
  flag,
  insertPings,
  log,
  measureLatency,
  NATIVE_HEAD,
  percentile,
  positions,
  projectionCopies,
  secondDatabase,
  startDaemon,
  waitOrThrow,
} from './support.js';

/**
 * The figures of the wake-up path (issue 27, part one): what writers pay for a runner watching them (15), live
 * latency across write rates (16), and the cost of a runner that has nothing to do (17). See high-water/wake.ts.
 */

/** A figure's table row: label, value, baseline or target. */
type Row = [string, string, string];

const WRITER_SECONDS = flag('writer-seconds', 8);
const IDLE_SECONDS = flag('idle-seconds', 60);
const IDLE_TRIES = flag('idle-tries', 50);

const fmt = (n: number) => Math.round(n).toLocaleString('en-US');

/** CPU seconds used so far by the backends of the runner's sessions in one database (their application_name). */
async function runnerBackendsCpu(pool: pg.Pool, database: string): Promise<number> {
  const { rows } = await pool.query<{ pid: number }>(`SELECT pid FROM pg_stat_activity WHERE datname = $1 AND application_name LIKE $2`, [
    database,
    `${APPLICATION_NAME}:%`,
  ]);
  return rows.reduce((sum, r) => sum + cpuSecondsOf(r.pid), 0);
}

/** Whether the leader sleeps (the flag asks writers to notify). */
async function leaderAsleep(pool: pg.Pool): Promise<boolean> {
  const { rows } = await pool.query(`SELECT pg_sequence_last_value('projection_wake_flag') = 1 AS asleep`);
  return rows[0].asleep === true;
}

/** A daemon of `projections` started on `url`, waited for until every one of them has a checkpoint at H. */
async function caughtUpDaemon(url: string, projections: string, names: string[], pool: pg.Pool) {
  const port = await freePort();
  const daemon = startDaemon(url, ['--metrics-port', String(port)], projections);
  const head = async () => Number((await pool.query(NATIVE_HEAD)).rows[0].m);
  const caughtUp = async () => {
    daemon.check();
    const gauges = await positions(port).catch(() => undefined);
    if (!gauges || gauges.highWater < (await head())) return false;
    return names.every((name) => (gauges.checkpoints.get(name) ?? -1) >= gauges.highWater);
  };
  await waitOrThrow(caughtUp, 120_000, 'daemon caught up');
  return { daemon, caughtUp };
}

type Setup = 'a' | 'b' | 'c';
type Writer = 'insert' | 'append';

/** One figure in a fresh database: `writers` sessions writing one event per transaction for WRITER_SECONDS. */
async function throughputOnce(pool: pg.Pool, url: string, setup: Setup, writer: Writer, writers: number, index: number) {
  const name = `bench_writers_${index}`;
  const target = await secondDatabase(pool, url, name, 0);
  // (a) the table as migrate makes it without the runner's trigger; (b) as migrate makes it; (c) and a daemon.
  if (setup === 'a') await target.pool.query('ALTER TABLE events DISABLE TRIGGER events_notify');
  const noop = projectionCopies('noop', 1);
  const running = setup === 'c' ? await caughtUpDaemon(target.url, noop, ['noop_1'], target.pool) : undefined;
  const writerPool = new pg.Pool({ connectionString: target.url, max: writers });
  writerPool.on('error', () => {});
  const store = new EventStore(writerPool);
  const runnerCpuBefore = running ? await runnerBackendsCpu(pool, name) : 0;
  let events = 0;
  const deadline = Date.now() + WRITER_SECONDS * 1000;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: writers }, async (_, w) => {
      for (let i = 0; Date.now() < deadline; i++) {
        if (writer === 'append') await store.append(`w-${w}-${i % 100}`, [{ type: 'Deposited', data: { i, note: 'x'.repeat(200) } }]);
        else {
          await writerPool.query(`INSERT INTO events (stream_name, stream_position, type, data) VALUES ($1, $2, 'Deposited', $3)`, [
            `w-${w}`,
            i + 1,
            JSON.stringify({ i, note: 'x'.repeat(200) }),
          ]);
        }
        events++;
      }
    }),
  );
  const seconds = (performance.now() - started) / 1000;
  let runnerCpuPer1000: number | undefined;
  if (running) {
    await waitOrThrow(running.caughtUp, 120_000, 'daemon caught up after the writes');
    runnerCpuPer1000 = ((await runnerBackendsCpu(pool, name)) - runnerCpuBefore) / (events / 1000);
    await running.daemon.stop();
  }
  await writerPool.end();
  await target.pool.end();
  await pool.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
  return { rate: events / seconds, runnerCpuPer1000 };
}

/**
 * (15) Writer throughput, one event per transaction, 8 and 32 writers, plain INSERT and events_append: (a) no
 * runner's trigger, (b) after migrate, (c) with a daemon following (one no-op projection), each figure in a fresh
 * database, two rounds alternated, mean. Beside (c): PostgreSQL CPU-seconds of the daemon's sessions per 1,000 events.
 */
export async function writerThroughput(pool: pg.Pool, url: string): Promise<{ rows: Row[]; results: unknown }> {
  const rows: Row[] = [];
  const results: Record<string, unknown> = {};
  let index = 0;
  for (const writers of [8, 32]) {
    for (const writer of ['insert', 'append'] as const) {
      const samples: Record<Setup, Array<{ rate: number; runnerCpuPer1000?: number }>> = { a: [], b: [], c: [] };
      for (let round = 0; round < 2; round++) {
        for (const setup of ['a', 'b', 'c'] as const) {
          log(`(15) ${writers} writers, ${writer}, (${setup}), round ${round + 1}`);
          samples[setup].push(await throughputOnce(pool, url, setup, writer, writers, index++));
        }
      }
      const mean = (s: Setup) => samples[s].reduce((sum, x) => sum + x.rate, 0) / samples[s].length;
      const cpu = samples.c.reduce((sum, x) => sum + (x.runnerCpuPer1000 ?? 0), 0) / samples.c.length;
      const [a, b, c] = [mean('a'), mean('b'), mean('c')];
      results[`${writers}x${writer}`] = { a, b, c, runnerCpuSecondsPer1000: cpu, samples };
      const label = `(15) ${writers} writers x 1 event, ${writer === 'insert' ? 'plain INSERT' : 'events_append'}`;
      rows.push([`${label} (a) no trigger`, `${fmt(a)} events/s`, 'baseline']);
      rows.push([`${label} (b) after migrate`, `${fmt(b)} events/s`, `${(b / a).toFixed(2)} x (a) (target >= 0.95)`]);
      rows.push([
        `${label} (c) daemon following`,
        `${fmt(c)} events/s`,
        `${(c / a).toFixed(2)} x (a) (target >= 0.75); daemon's statements ${cpu.toFixed(3)} PostgreSQL CPU-s per 1,000 events`,
      ]);
    }
  }
  return { rows, results };
}

/**
 * The baseline of (16): the events table's trigger as it was before the wake-up flag (a NOTIFY on every commit) or
 * as migrate makes it. With it, every commit wakes the leader at once, whether it follows the head or not.
 */
async function notifyOnEveryCommit(pool: pg.Pool, on: boolean): Promise<void> {
  const target = { tableQualified: 'events', positionColumn: 'global_position', channel: 'events', triggerName: 'events_notify' };
  await pool.query(notifyTriggerSql(on ? target : { ...target, wakeFlagLiteral: storeNames().q.wakeFlagLiteral }));
}

/**
 * (16) Live latency, commit -> applied (plain INSERTs), at 10/s, 200/s and 2,000/s, with 1 and 16 projections;
 * beside each, the same run with a NOTIFY on every commit (the baseline of its p50), measured right after it.
 */
export async function liveLatencyAcrossRates(pool: pg.Pool, url: string): Promise<{ rows: Row[]; results: unknown }> {
  const rows: Row[] = [];
  const results: Record<string, unknown> = {};
  const ms = (l: { p50: number; p99: number; max: number }) =>
    `p50 ${l.p50.toFixed(1)} ms, p99 ${l.p99.toFixed(1)} ms, max ${l.max.toFixed(1)} ms`;
  for (const projections of [1, 16]) {
    const folder = projectionCopies('noop', projections - 1, true);
    const caughtUp = ['latency', ...Array.from({ length: projections - 1 }, (_, i) => `noop_${i + 1}`)];
    for (const rate of [10, 200, 2_000]) {
      const run = { projections: folder, caughtUp, headSql: NATIVE_HEAD, rate, write: insertPings(pool) };
      log(`(16) live latency, ${projections} projection(s), ${rate}/s`);
      const l = await measureLatency(pool, url, run);
      log(`(16) the same with a NOTIFY on every commit`);
      await notifyOnEveryCommit(pool, true);
      const every = await measureLatency(pool, url, run).finally(() => notifyOnEveryCommit(pool, false));
      results[`${projections}p_${rate}`] = { following: l, notifyOnEveryCommit: every };
      rows.push([
        `(16) live latency, ${projections} projection${projections > 1 ? 's' : ''}, ${fmt(rate)}/s`,
        ms(l),
        `${l.samples} INSERTs (target p99 <= 20 ms, p50 <= the baseline's); baseline, a NOTIFY on every commit: ${ms(every)}`,
      ]);
    }
  }
  return { rows, results };
}

/**
 * (17) A daemon caught up with nothing to do for IDLE_SECONDS: the CPU its sessions cost PostgreSQL, as a share of
 * one core; then the first event after the leader fell asleep, IDLE_TRIES times: commit -> applied.
 */
export async function idleCost(pool: pg.Pool, url: string): Promise<{ rows: Row[]; results: unknown }> {
  const name = 'bench_idle';
  const target = await secondDatabase(pool, url, name, 0);
  const folder = projectionCopies('noop', 0, true);
  const { daemon } = await caughtUpDaemon(target.url, folder, ['latency'], target.pool);
  try {
    await waitOrThrow(() => leaderAsleep(target.pool), 60_000, 'the leader asleep');
    log(`(17) idle for ${IDLE_SECONDS} s`);
    const before = await runnerBackendsCpu(pool, name);
    const started = performance.now();
    await new Promise((resolve) => setTimeout(resolve, IDLE_SECONDS * 1000));
    const seconds = (performance.now() - started) / 1000;
    const share = ((await runnerBackendsCpu(pool, name)) - before) / seconds;

    log(`(17) first event after idle, ${IDLE_TRIES} tries`);
    const write = insertPings(target.pool);
    const latencies: number[] = [];
    for (let i = 0; i < IDLE_TRIES; i++) {
      await waitOrThrow(() => leaderAsleep(target.pool), 60_000, 'the leader asleep', 5);
      const { position, committedAt } = await write(i);
      const applied = await waitOrThrow(
        async () => (await target.pool.query('SELECT 1 FROM bench_latency WHERE position = $1', [position])).rowCount === 1,
        60_000,
        'the ping applied',
        2,
      ).then(async () => {
        const { rows } = await target.pool.query(
          'SELECT (extract(epoch FROM applied_at) * 1000)::float8 AS at FROM bench_latency WHERE position = $1',
          [position],
        );
        return rows[0].at as number;
      });
      latencies.push(Math.max(0, applied - committedAt));
    }
    latencies.sort((a, b) => a - b);
    const p50 = percentile(latencies, 50);
    const p99 = percentile(latencies, 99);
    return {
      results: { idleSeconds: seconds, runnerCoreShare: share, firstEventMs: { p50, p99, max: latencies.at(-1), tries: latencies.length } },
      rows: [
        [
          '(17) idle cost, daemon caught up',
          `${(share * 100).toFixed(2)} % of one core`,
          `PostgreSQL CPU of its sessions over ${fmt(seconds)} s (target <= 1 %)`,
        ],
        [
          '(17) first event after the leader fell asleep',
          `p50 ${p50.toFixed(1)} ms, p99 ${p99.toFixed(1)} ms, max ${latencies.at(-1)!.toFixed(1)} ms`,
          `${latencies.length} tries (target p99 <= 20 ms)`,
        ],
      ],
    };
  } finally {
    await daemon.stop();
    await target.pool.end();
    await pool.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
  }
}
