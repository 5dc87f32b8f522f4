/** What every figure of the benchmark shares: the command line, the store, the daemon and CLI runs, CPU and latency sampling. */
import { spawn } from 'node:child_process';
import { chmodSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import pg from 'pg';
import { freePort, PostgresServer } from '../../src/db/postgres-server.js';
import { storeNames } from '../../src/db/identifiers.js';
import { migrate } from '../../src/db/migrate.js';
import { EventStore, type StoredEvent } from '../../src/index.js';
import { readEvents } from '../../src/sources/native.js';
import { accountBalances } from '../../projections/account-balances.js';
import { EVENT_COLUMNS } from '../../src/store/types.js';
import { sleep, waitUntil } from '../../src/shared/time.js';

export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
// The daemon and the CLI run compiled and with the image's Node flags, as in production (`npm run bench` builds first).
export const NODE_FLAGS = ['--max-semi-space-size=16', ...(process.env.BENCH_NODE_FLAGS ?? '').split(' ').filter(Boolean)];
export const PROJECTIONS = path.join(REPO, 'dist/test/bench/projections');
export const CLI = path.join(REPO, 'dist/src/cli/main.js');

export function flag(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : fallback;
}
export const EVENTS = flag('events', 500_000);
export const MEMORY_EVENTS = flag('memory-events', 5_000_000);
export const LIVE_SECONDS = flag('live-seconds', 30);
export const LIVE_RATE = flag('live-rate', 500);
export const APPEND_SECONDS = flag('append-seconds', 10);
export const SCALING_EVENTS = flag('scaling-events', 200_000);
export const NOOP_TYPES = ((i) => (i > 0 ? process.argv[i + 1]!.split(',') : undefined))(process.argv.indexOf('--noop-types'));
/** `--only 5,9,11,12` (figure numbers) or `--only live` (the live-latency figures 5, 9, 11, 12): those figures alone. */
export const ONLY = ((): Set<number> | undefined => {
  const i = process.argv.indexOf('--only');
  if (i < 0) return undefined;
  const text = process.argv[i + 1] ?? '';
  const figures = text === 'live' ? [5, 9, 11, 12] : text.split(',').map(Number);
  if (figures.length === 0 || figures.some((n) => !Number.isInteger(n) || n < 1 || n > 40)) {
    throw new Error(`--only takes figure numbers 1..40 separated by commas, or "live" (got "${text}")`);
  }
  return new Set(figures);
})();
export const runs = (figure: number) => ONLY === undefined || ONLY.has(figure);

export const log = (message: string) => process.stderr.write(`[bench] ${message}\n`);
export const percentile = (sorted: number[], p: number) => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;

export async function startDatabase() {
  if (process.env.DATABASE_URL) return { url: process.env.DATABASE_URL, stop: async () => {} };
  const dir = mkdtempSync(path.join(os.tmpdir(), 'pr-bench-'));
  chmodSync(dir, 0o755);
  // Default durability settings: the figures are for a server configured as in production.
  const server = new PostgresServer({ dataDir: path.join(dir, 'data'), settings: { shared_buffers: '512MB', max_wal_size: '4GB' } });
  await server.start();
  log(`embedded PostgreSQL (${server.binariesSource}) on port ${server.port}`);
  return { url: server.connectionString, stop: async () => (await server.stop(), rmSync(dir, { recursive: true, force: true })) };
}

/** ~300-byte events over 10,000 account streams, inserted set-wise (data generation is not what is measured). */
export async function generate(pool: pg.Pool, from: number, to: number) {
  const chunk = 250_000;
  for (let start = from; start <= to; start += chunk) {
    const end = Math.min(to, start + chunk - 1);
    await pool.query(
      `INSERT INTO events (stream_name, stream_position, type, data)
       SELECT 'account-' || (i % 10000), i / 10000 + 1,
              CASE WHEN i % 10 = 0 THEN 'Withdrawn' WHEN i < 10000 THEN 'AccountOpened' ELSE 'Deposited' END,
              jsonb_build_object('amount', i % 100, 'owner', 'owner-' || (i % 10000), 'currency', 'EUR',
                                 'reference', md5(i::text), 'note', repeat('x', 160))
         FROM generate_series($1::bigint, $2::bigint) AS i`,
      [start, end],
    );
  }
  await pool.query('VACUUM ANALYZE events');
}

/** (1) The physical limit for a reader: stream the table in global order to Node, no handler. */
export async function rawScan(pool: pg.Pool): Promise<{ events: number; seconds: number }> {
  const client = await pool.connect();
  const started = performance.now();
  let after = '0';
  let events = 0;
  for (;;) {
    const { rows } = await client.query({
      name: 'bench_scan',
      text: `SELECT ${EVENT_COLUMNS} FROM events WHERE global_position > $1 ORDER BY global_position LIMIT 10000`,
      values: [after],
    });
    if (rows.length === 0) break;
    events += rows.length;
    after = rows.at(-1).gp;
  }
  client.release();
  return { events, seconds: (performance.now() - started) / 1000 };
}

/** Runs the CLI as a child process, sampling its resident memory; `seconds` from the spawn to its exit. */
export function runCli(
  args: string[],
  url: string,
): Promise<{ stdout: string; stderr: string; peakRssMb: number; code: number | null; seconds: number }> {
  return new Promise((resolve) => {
    const started = performance.now();
    const child = spawn(process.execPath, [...NODE_FLAGS, CLI, ...args], {
      cwd: REPO,
      env: { ...process.env, DATABASE_URL: url, PROJECTION_RUNNER_LOG_LEVEL: 'warn' },
    });
    let stdout = '';
    let stderr = '';
    let peak = 0;
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const sampler = setInterval(() => {
      try {
        // VmHWM: the kernel's own peak of resident memory, so short spikes between samples are not missed.
        const kb = Number(/VmHWM:\s+(\d+)/.exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'))?.[1] ?? 0);
        peak = Math.max(peak, kb / 1024);
      } catch {
        /* exited */
      }
    }, 100);
    child.on('close', (code) => {
      clearInterval(sampler);
      resolve({ stdout, stderr, peakRssMb: Math.round(peak), code, seconds: (performance.now() - started) / 1000 });
    });
  });
}

/**
 * `replay NAME --yes` as the user waits for it: `seconds` is the whole command (process start, module loading, setup,
 * the rebuild, the exit); `reportedSeconds` the rebuild alone, as the CLI's summary line says.
 */
export async function replay(name: string, url: string) {
  const result = await runCli(['replay', name, '--yes', '--projections', PROJECTIONS], url);
  const match = /replayed \S+: (\d+) events in ([\d.]+)s/.exec(result.stdout);
  if (!match || result.code !== 0) throw new Error(`replay ${name} failed: ${result.stdout}\n${result.stderr.slice(-2000)}`);
  return { events: Number(match[1]), seconds: result.seconds, reportedSeconds: Number(match[2]), peakRssMb: result.peakRssMb };
}

/** `rebuild NAME`: a new version built from zero beside the live one, then switched to; timed as `replay` is. */
export async function rebuild(name: string, url: string) {
  const result = await runCli(['rebuild', name, '--projections', PROJECTIONS], url);
  const match = /version (\d+) is live \(checkpoint \d+; (\d+) events applied in ([\d.]+)s/.exec(result.stdout);
  if (!match || result.code !== 0) throw new Error(`rebuild ${name} failed: ${result.stdout}\n${result.stderr.slice(-2000)}`);
  return {
    version: Number(match[1]),
    events: Number(match[2]),
    seconds: result.seconds,
    reportedSeconds: Number(match[3]),
    peakRssMb: result.peakRssMb,
  };
}

export async function appendThroughput(url: string, perAppend: number) {
  const pool = new pg.Pool({ connectionString: url, max: 8 });
  pool.on('error', () => {});
  const store = new EventStore(pool);
  let events = 0;
  const deadline = Date.now() + APPEND_SECONDS * 1000;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: 8 }, async (_, w) => {
      for (let i = 0; Date.now() < deadline; i++) {
        await store.append(
          `bench-append-${perAppend}-${w}-${i % 100}`,
          Array.from({ length: perAppend }, (_, k) => ({
            type: 'Deposited',
            data: { amount: k, note: 'x'.repeat(200) },
          })),
        );
        events += perAppend;
      }
    }),
  );
  const seconds = (performance.now() - started) / 1000;
  await pool.end();
  return { events, seconds, rate: events / seconds };
}

export function startDaemon(url: string, args: string[] = [], projections = PROJECTIONS) {
  const child = spawn(process.execPath, [...NODE_FLAGS, CLI, 'run', '--projections', projections, '--metrics-port', '0', ...args], {
    cwd: REPO,
    env: { ...process.env, DATABASE_URL: url, PROJECTION_RUNNER_LOG_LEVEL: 'warn' },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (d) => (stderr = (stderr + String(d)).slice(-4000)));
  return {
    pid: child.pid!,
    stop: () => new Promise<void>((resolve) => (child.once('exit', () => resolve()), child.kill('SIGTERM'))),
    /** Throws with the daemon's last words when it has exited: a wait on it must not last its whole timeout. */
    check: () => {
      if (child.exitCode !== null) throw new Error(`the daemon exited with ${child.exitCode}:\n${stderr}`);
    },
  };
}

/**
 * CPU seconds (user + system) a process has used so far; 0 once it is gone. With `children`, also what its children
 * that exited and were waited for used (cutime, cstime).
 */
export function cpuSecondsOf(pid: number, { children = false } = {}): number {
  try {
    // Fields after the command's closing parenthesis: utime, stime, cutime and cstime are the 12th to 15th (clock
    // ticks, 100/s).
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    const own = Number(fields[11]) + Number(fields[12]);
    return (children ? own + Number(fields[13]) + Number(fields[14]) : own) / 100;
  } catch {
    return 0;
  }
}

/**
 * CPU seconds used so far by every PostgreSQL process on the machine (the server and its backends), including
 * backends that have exited since (the server's children): without them, the sessions a daemon closes within a
 * measured span took their CPU with them and the span's figure could come out negative.
 */
export function postgresCpuSeconds(): number {
  let total = 0;
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (readFileSync(`/proc/${entry}/comm`, 'utf8').trim() === 'postgres') total += cpuSecondsOf(Number(entry), { children: true });
    } catch {
      /* exited */
    }
  }
  return total;
}

export async function waitOrThrow(check: () => Promise<boolean>, timeoutMs: number, what: string, intervalMs = 50) {
  const met = await waitUntil(async () => ((await check()) ? true : undefined), { intervalMs, timeoutMs });
  if (!met) throw new Error(`timed out waiting for ${what}`);
}

export interface LatencyRun {
  /** The daemon's projections folder and extra flags. */
  projections?: string;
  args?: string[];
  /** Projections that must have caught up before the writes start. */
  caughtUp: string[];
  /** The written table's highest position (one row, column `m`): the daemon's H must have reached it first. */
  headSql: string;
  rate: number;
  /** Writes ping number i; resolves to its global position and when its commit returned. */
  write: (i: number) => Promise<{ position: string; committedAt: number }>;
  /** Scrapes /metrics at the end: reads of the event table per batch of the latency projection. */
  countReads?: boolean;
}

export const NATIVE_HEAD = 'SELECT coalesce(max(global_position), 0) AS m FROM events';

/** Commit → read model latency of the `latency` projection (bench_latency) for pings written at `rate`/s. */
export async function measureLatency(pool: pg.Pool, url: string, run: LatencyRun) {
  const metricsPort = await freePort();
  // Everything written before this daemon starts must be applied before the writes start. The persisted H and
  // checkpoints are no proof of that: they are the previous daemon's, and events appended while no daemon ran (the
  // append figures) lie above them. Waiting on them started (9) while this daemon was still starting and catching up
  // ~47,000 events, which every ping of the first ~0.8 s waited for (p99 548.6 ms = max 841.2 ms less the 300 ms
  // of pings, 1 % at 200/s, written in that ramp). So: this daemon's own gauges, H at the table's head as it is now.
  const target = Number((await pool.query(run.headSql)).rows[0].m);
  const daemon = startDaemon(url, [...(run.args ?? []), '--metrics-port', String(metricsPort)], run.projections);
  await waitOrThrow(
    async () => {
      daemon.check();
      const gauges = await positions(metricsPort).catch(() => undefined);
      if (!gauges || gauges.highWater < target) return false;
      return run.caughtUp.every((name) => (gauges.checkpoints.get(name) ?? -1) >= gauges.highWater);
    },
    600_000,
    'daemon caught up',
  );
  const before = run.countReads ? await scrape(metricsPort) : undefined;
  const daemonCpuBefore = cpuSecondsOf(daemon.pid);
  const pinged = await pingLatencies(pool, run);
  const after = run.countReads ? await scrape(metricsPort) : undefined;
  const { latencies, seconds } = pinged;
  const cpu = { ...pinged.cpu, daemon: (cpuSecondsOf(daemon.pid) - daemonCpuBefore) / seconds };
  await daemon.stop();
  const delta = (key: 'reads' | 'latencyBatches' | 'wakeUps') => (before && after ? after[key] - before[key] : Number.NaN);
  const reads = before && after ? delta('reads') / Math.max(1, delta('wakeUps')) : undefined;
  const readsPerBatch = before && after ? delta('reads') / Math.max(1, delta('latencyBatches')) : undefined;
  return {
    samples: latencies.length,
    p50: percentile(latencies, 50),
    p99: percentile(latencies, 99),
    max: latencies.at(-1)!,
    readsPerWakeUp: reads,
    readsPerLatencyBatch: readsPerBatch,
    /** Cores busy on average while the pings were written and applied: daemon, PostgreSQL, this process (writer). */
    cpu,
    batchesPerSecond: before && after ? (after.batches - before.batches) / seconds : undefined,
  };
}

/**
 * Writes LIVE_SECONDS of pings at `run.rate` and waits until the `latency` read model (bench_latency) has them all:
 * each one's commit -> read model time, sorted, with the CPU PostgreSQL and this process (the writer) used meanwhile.
 */
export async function pingLatencies(pool: pg.Pool, run: Pick<LatencyRun, 'rate' | 'write'>) {
  await pool.query('TRUNCATE bench_latency');
  const cpuBefore = { postgres: postgresCpuSeconds(), writer: process.cpuUsage() };
  const commits = new Map<string, number>();
  const interval = 1000 / run.rate;
  const started = performance.now();
  const total = LIVE_SECONDS * run.rate;
  const inFlight: Promise<void>[] = [];
  for (let i = 0; i < total; i++) {
    const due = started + i * interval;
    const wait = due - performance.now();
    if (wait > 0) await sleep(wait);
    inFlight.push(run.write(i).then((r) => void commits.set(r.position, r.committedAt)));
    if (inFlight.length > 64) await Promise.all(inFlight.splice(0, 32));
  }
  await Promise.all(inFlight);
  await waitOrThrow(
    async () => Number((await pool.query('SELECT count(*) AS n FROM bench_latency')).rows[0].n) >= total,
    60_000,
    'pings applied',
  );
  const seconds = (performance.now() - started) / 1000;
  const cpu = {
    postgres: (postgresCpuSeconds() - cpuBefore.postgres) / seconds,
    writer: ((u) => (u.user + u.system) / 1e6 / seconds)(process.cpuUsage(cpuBefore.writer)),
  };
  const { rows } = await pool.query('SELECT position::text AS p, (extract(epoch FROM applied_at) * 1000)::float8 AS at FROM bench_latency');
  const latencies = rows
    .filter((r) => commits.has(r.p))
    .map((r) => Math.max(0, r.at - commits.get(r.p)!))
    .sort((a, b) => a - b);
  return { latencies, seconds, cpu };
}

/**
 * The floor under (11): what one transaction per projection per wake-up costs with nothing else of a runner. On each
 * NOTIFY from the writer (one round at a time; those during a round make one more), the new events are read once,
 * then `projections` sessions each commit their own transaction in one round trip (BEGIN, a checkpoint UPDATE, the
 * latency rows for the first, COMMIT): no high-water mark (it reads past gaps, unsafe), no context, no
 * compare-and-set, no handler call, no gap handling (a read looks back for late commits). Runs in this process, beside
 * the writer. With `roundTrips` 2, each transaction first sends BEGIN and a one-row read and waits for it, as a batch
 * sends BEGIN and its context before its handler runs.
 */
export async function bareTransactionsLatency(pool: pg.Pool, url: string, projections: number, roundTrips: 1 | 2) {
  await pool.query('CREATE TABLE IF NOT EXISTS bench_floor_checkpoints (name text PRIMARY KEY, position bigint NOT NULL)');
  await pool.query('TRUNCATE bench_floor_checkpoints');
  const connect = async () => {
    const client = new pg.Client({ connectionString: url, options: '-c synchronous_commit=off' });
    client.on('error', () => {}); // the server stopping under a failed run: the run's own error is the one to see
    await client.connect();
    return client;
  };
  const sessions = await Promise.all(Array.from({ length: projections }, connect));
  const reader = await connect();
  const listener = await connect();
  let after = (await reader.query('SELECT coalesce(max(global_position), 0)::text AS m FROM events')).rows[0].m as string;
  for (let i = 0; i < projections; i++) await pool.query('INSERT INTO bench_floor_checkpoints VALUES ($1, $2)', [`p${i}`, after]);
  let running: Promise<void> | undefined;
  let again = false;
  // Commits arrive out of position order: each read looks back 1,000 positions for those committed since.
  const seen = new Set<string>();
  const round = async (): Promise<void> => {
    const { rows } = await reader.query(
      'SELECT global_position::text AS p FROM events WHERE global_position > $1 - 1000 ORDER BY global_position',
      [after],
    );
    const fresh = rows.map((r) => r.p as string).filter((p) => !seen.has(p));
    if (fresh.length > 0) {
      for (const p of fresh) seen.add(p);
      after = rows.at(-1).p;
      const latency = `INSERT INTO bench_latency (position, applied_at) SELECT unnest('{${fresh.join(',')}}'::bigint[]), clock_timestamp() ON CONFLICT DO NOTHING;`;
      const commit = (i: number) =>
        `UPDATE bench_floor_checkpoints SET position = ${after} WHERE name = 'p${i}'; ${i === 0 ? latency : ''} COMMIT`;
      await Promise.all(
        sessions.map(async (session, i) => {
          if (roundTrips === 1) return session.query(`BEGIN; ${commit(i)}`);
          await session.query(`BEGIN; SELECT position FROM bench_floor_checkpoints WHERE name = 'p${i}'`);
          return session.query(commit(i));
        }),
      );
    }
    if (again) {
      again = false;
      return round();
    }
  };
  listener.on('notification', () => {
    if (running) again = true;
    else running = round().finally(() => (running = undefined));
  });
  await listener.query('LISTEN events');
  // No runner here: the trigger notifies only while the wake-up flag says a leader sleeps (high-water/wake.ts).
  const { setWakeFlag } = storeNames().q;
  await pool.query(`SELECT ${setWakeFlag}(true)`);
  const { latencies, seconds, cpu } = await pingLatencies(pool, { rate: LIVE_RATE, write: appendPings(pool) });
  await pool.query(`SELECT ${setWakeFlag}(false)`);
  await running;
  await Promise.all([...sessions, reader, listener].map((c) => c.end()));
  return {
    samples: latencies.length,
    p50: percentile(latencies, 50),
    p99: percentile(latencies, 99),
    max: latencies.at(-1)!,
    cpu,
    seconds,
  };
}

/** The daemon's own H and the checkpoints of its projections (its gauges: not the previous daemon's rows). */
export async function positions(port: number): Promise<{ highWater: number; checkpoints: Map<string, number> }> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const highWater = Number(/^projection_runner_high_water_position (\S+)$/m.exec(text)?.[1] ?? Number.NaN);
  const checkpoints = new Map(
    [...text.matchAll(/^projection_runner_checkpoint_position\{projection="([^"]+)"\} (\S+)$/gm)].map((m) => [m[1]!, Number(m[2])]),
  );
  return { highWater: Number.isNaN(highWater) ? -1 : highWater, checkpoints };
}

/** The daemon's own counters: reads of the event table, its wake-ups (H moved), and batches of the latency projection. */
export async function scrape(port: number): Promise<{ reads: number; latencyBatches: number; wakeUps: number; batches: number }> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const value = (pattern: RegExp) => Number(pattern.exec(text)?.[1] ?? 0);
  return {
    reads: value(/^projection_runner_event_reads_total (\S+)$/m),
    wakeUps: value(/^projection_runner_wakeups_total (\S+)$/m),
    latencyBatches: value(/^projection_runner_batch_duration_seconds_count\{projection="latency"\} (\S+)$/m),
    batches: [...text.matchAll(/^projection_runner_batch_duration_seconds_count\{[^}]*\} (\S+)$/gm)].reduce(
      (sum, m) => sum + Number(m[1]),
      0,
    ),
  };
}

/** The ping writer of the native store: EventStore.append (events_append). */
export function appendPings(pool: pg.Pool) {
  const store = new EventStore(pool);
  return async (i: number) => {
    const r = await store.append(`ping-${i % 100}`, [{ type: 'Ping', data: { i } }]);
    return { position: r.lastPosition.toString(), committedAt: Date.now() };
  };
}

/** A writer outside the library: one plain INSERT per ping (it wakes the runner only through the table's trigger). */
export function insertPings(pool: pg.Pool) {
  return async (i: number) => {
    const { rows } = await pool.query(
      `INSERT INTO events (stream_name, stream_position, type, data) VALUES ($1, 1, 'Ping', $2) RETURNING global_position::text AS p`,
      [`insert-ping-${i}-${Date.now()}`, JSON.stringify({ i })],
    );
    return { position: rows[0].p as string, committedAt: Date.now() };
  };
}

/**
 * Projection modules written for one run: `count` copies of a kind, each with its own name (and read model), plus
 * the latency projection when asked. Returns the folder.
 */
export function projectionCopies(kind: 'noop' | 'balances', count: number, withLatency = false): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'pr-bench-projections-'));
  const balances = pathToFileURL(path.join(REPO, 'dist/projections/account-balances.js')).href;
  for (let i = 1; i <= count; i++) {
    const name = `${kind}_${i}`;
    const body =
      kind === 'noop'
        ? `export default { name: '${name}', eventTypes: ${JSON.stringify(NOOP_TYPES)}, async handleBatch() {} };\n`
        : `import { accountBalances } from '${balances}';\nexport default accountBalances({ name: '${name}' });\n`;
    writeFileSync(path.join(dir, `${name}.mjs`), body);
  }
  if (withLatency) {
    writeFileSync(
      path.join(dir, 'latency.mjs'),
      `export { default } from '${pathToFileURL(path.join(PROJECTIONS, 'latency.js')).href}';\n`,
    );
  }
  return dir;
}

export interface CatchUp {
  seconds: number;
  /** CPU seconds over the same span: the daemon's process, and PostgreSQL's (server and every backend). */
  daemonCpu: number;
  postgresCpu: number;
}

/** Catch-up from zero of `count` copies of a projection over the whole store: seconds from start to all at the head. */
export async function catchUp(pool: pg.Pool, url: string, kind: 'noop' | 'balances', count: number): Promise<CatchUp> {
  const dir = projectionCopies(kind, count);
  const names = Array.from({ length: count }, (_, i) => `${kind}_${i + 1}`);
  await pool.query('DELETE FROM projection_checkpoints');
  for (const name of names) await pool.query(`DROP TABLE IF EXISTS ${name}`);
  const { rows } = await pool.query('SELECT max(global_position)::bigint AS h FROM events');
  const head = Number(rows[0].h);
  const daemon = startDaemon(url, ['--gap-evidence', 'off'], dir);
  const progress = async () =>
    (await pool.query('SELECT count(*)::int AS n, min(position)::bigint AS p FROM projection_checkpoints WHERE name = ANY($1)', [names]))
      .rows[0];
  // From the moment the first projection starts (the daemon is up): the others' start-up counts, as it does in production.
  await waitOrThrow(async () => (daemon.check(), (await progress()).n >= 1), 60_000, 'projections started', 5);
  const started = performance.now();
  const daemonCpuBefore = cpuSecondsOf(daemon.pid);
  const postgresCpuBefore = postgresCpuSeconds();
  await waitOrThrow(
    async () => (await progress()).n === count && Number((await progress()).p) >= head,
    1_200_000,
    `${count} ${kind} caught up`,
    20,
  );
  const seconds = (performance.now() - started) / 1000;
  const daemonCpu = cpuSecondsOf(daemon.pid) - daemonCpuBefore;
  const postgresCpu = postgresCpuSeconds() - postgresCpuBefore;
  await daemon.stop();
  rmSync(dir, { recursive: true, force: true });
  return { seconds, daemonCpu, postgresCpu };
}

/**
 * The floor under the runner for `count` account-balance copies: the same handler code (projections/account-balances)
 * over the same events in batches of the runner's catch-up size, one transaction per batch and copy, the copies in
 * parallel sessions, with nothing of the runner (no context, checkpoint, reader): the events are read before the
 * clock starts. Whatever a runner does, the copies' own writes take this long on this machine.
 */
export async function handlersAlone(pool: pg.Pool, url: string, count: number, batchSize: number): Promise<CatchUp> {
  const names = storeNames();
  const batches: StoredEvent[][] = [];
  for (let after = 0n; ;) {
    const { events } = await readEvents(pool, names, after, BigInt(Number.MAX_SAFE_INTEGER), batchSize, undefined);
    if (events.length === 0) break;
    batches.push(events);
    after = events.at(-1)!.globalPosition;
  }
  const copies = Array.from({ length: count }, (_, i) => accountBalances({ name: `floor_${i + 1}` }));
  // Sessions of their own, as the runner's would be (asynchronous commit, as the runner's are).
  const sessions = await Promise.all(
    copies.map(async (copy) => {
      const client = new pg.Client({ connectionString: url, options: '-c synchronous_commit=off' });
      await client.connect();
      await client.query(`DROP TABLE IF EXISTS ${copy.name}`);
      await copy.setup!(client);
      return client;
    }),
  );
  const started = performance.now();
  const postgresCpuBefore = postgresCpuSeconds();
  const ownCpuBefore = process.cpuUsage();
  await Promise.all(
    copies.map(async (copy, i) => {
      const client = sessions[i]!;
      for (const events of batches) {
        await client.query('BEGIN');
        await copy.handleBatch!(events, client);
        await client.query('COMMIT');
      }
    }),
  );
  const seconds = (performance.now() - started) / 1000;
  const own = process.cpuUsage(ownCpuBefore);
  const result = { seconds, daemonCpu: (own.user + own.system) / 1e6, postgresCpu: postgresCpuSeconds() - postgresCpuBefore };
  await Promise.all(sessions.map((c) => c.end()));
  for (const copy of copies) await pool.query(`DROP TABLE IF EXISTS ${copy.name}`);
  return result;
}

/** A second database on the same server, migrated, with `events` generated events. */
export async function secondDatabase(pool: pg.Pool, url: string, name: string, events: number, { native = true } = {}) {
  await pool.query(`DROP DATABASE IF EXISTS ${name}`);
  await pool.query(`CREATE DATABASE ${name}`);
  const dbUrl = url.replace(/\/[^/?]*(\?|$)/, `/${name}$1`);
  const dbPool = new pg.Pool({ connectionString: dbUrl, max: 10 });
  dbPool.on('error', () => {});
  if (native) await migrate(dbPool, storeNames());
  if (events > 0) await generate(dbPool, 0, events - 1);
  return { url: dbUrl, pool: dbPool };
}

/** Rollback → resolution time, while another writer keeps appending (so the gap becomes visible). */
export async function gapResolution(pool: pg.Pool, url: string, daemonArgs: string[], samples: number) {
  const daemon = startDaemon(url, daemonArgs);
  await sleep(1_500);
  const store = new EventStore(pool);
  const stop = { done: false };
  const background = (async () => {
    for (let i = 0; !stop.done; i++) {
      await store.append(`bg-${i % 50}`, [{ type: 'Background', data: { i } }]);
      await sleep(10);
    }
  })();
  const waits: number[] = [];
  for (let s = 0; s < samples; s++) {
    const client = await pool.connect();
    await client.query('BEGIN');
    const { firstPosition } = await store.append(`doomed-${s}`, [{ type: 'Doomed', data: {} }], { client });
    await sleep(50);
    await client.query('ROLLBACK');
    const rolledBackAt = Date.now();
    client.release();
    let resolvedAt = 0;
    await waitOrThrow(
      async () => {
        const { rows } = await pool.query(
          `SELECT (extract(epoch FROM resolved_at) * 1000)::float8 AS at FROM projection_gaps
          WHERE $1 BETWEEN from_position AND to_position AND resolution IN ('dead', 'timed_out')`,
          [firstPosition.toString()],
        );
        resolvedAt = rows[0]?.at ?? 0;
        return rows.length > 0;
      },
      60_000,
      'gap resolution',
    );
    waits.push(Math.max(0, resolvedAt - rolledBackAt));
  }
  stop.done = true;
  await background;
  await daemon.stop();
  waits.sort((a, b) => a - b);
  return { samples, p50: percentile(waits, 50), max: waits.at(-1)! };
}
