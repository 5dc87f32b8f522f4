import { Option, type Command } from 'commander';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { guardPoolErrors } from '../db/connection.js';
import { createLogger, type LogFormat } from '../logger.js';
import { startMetricsServer, type MetricsServer } from '../metrics/server.js';
import { loadProjections } from '../projection/loader.js';
import { Runner } from '../runner/runner.js';
import { sleep } from '../shared/time.js';
import { EventStore } from '../store/event-store.js';
import { openDatabase } from './database.js';
import { StatusLine } from './status-line.js';
import { LOG_FORMATS, resolveConfig } from '../config.js';

/** The example projections: projections/ next to src/ (TypeScript, via tsx) or dist/projections (compiled). */
function bundledProjections(): string {
  const here = path.dirname(fileURLToPath(import.meta.url));
  return path.resolve(here, '../../projections');
}

/**
 * One demo writer: account events with a share of rolled-back transactions (gaps that die) and slow ones (gaps
 * that fill), now and then one slower than the gap timeout (a late event).
 */
async function demoWriter(pool: pg.Pool, store: EventStore, id: number, signal: AbortSignal, gapTimeoutMs: number) {
  let n = 0;
  while (!signal.aborted) {
    const account = `account-${id}-${n % 50}`;
    const events = [
      { type: n % 50 < 1 ? 'AccountOpened' : 'Deposited', data: { owner: `owner-${id}`, amount: 1 + (n % 90) } },
      ...(Math.random() < 0.3 ? [{ type: 'Withdrawn', data: { amount: 1 } }] : []),
    ];
    const roll = Math.random();
    if (roll < 0.85) {
      await store.append(account, events).catch(() => {});
    } else {
      const client = await pool.connect();
      try {
        await client.query('BEGIN');
        await store.append(account, events, { client });
        if (roll < 0.93)
          await client.query('ROLLBACK'); // a gap that will be declared dead
        else {
          await sleep(roll > 0.999 ? gapTimeoutMs * 1.5 : 100 + Math.random() * 600); // a gap that fills (or goes late)
          await client.query('COMMIT');
        }
      } catch {
        await client.query('ROLLBACK').catch(() => {});
      } finally {
        client.release();
      }
    }
    n++;
    await sleep(20 + Math.random() * 40);
  }
}

export function registerDemo(program: Command): void {
  program
    .command('demo')
    .description('embedded PostgreSQL, demo writers with rollbacks and slow transactions, the daemon, a live status line')
    .option('--writers <n>', 'concurrent demo writers', '4')
    .option('--duration <seconds>', 'stop by itself after this long (default: until Ctrl-C)')
    .option('--metrics-port <port>', 'metrics server port (0: a free one)', '9464')
    .addOption(new Option('--log-format <format>', 'json or pretty (default: pretty at a terminal)').choices(LOG_FORMATS))
    .action(async (options) => {
      // Log lines go above the live status line, on the same stream, so that the status line stays the last one.
      const status = new StatusLine();
      const format =
        (options.logFormat as LogFormat | undefined) ?? resolveConfig({}).logFormat ?? (process.stdout.isTTY ? 'pretty' : 'json');
      const log = createLogger(process.env.PROJECTION_RUNNER_LOG_LEVEL ?? 'warn', { format, write: (text) => status.above(text) });
      const projections = await loadProjections(bundledProjections());
      const gapTimeoutMs = 2_000;
      const writers = new AbortController();
      let writing: Array<Promise<void>> = [];
      let pool: pg.Pool | undefined;
      let runner: Runner | undefined;
      let metrics: MetricsServer | undefined;
      // The handlers exist before the embedded database starts, so a Ctrl-C at any moment stops what was started,
      // in order: writers, the daemon (it finishes its batch), then the database. The embedded server runs in its own
      // process group, so the terminal's SIGINT reaches this process only, never the server under the daemon.
      const opening = openDatabase(process.env.DATABASE_URL, log);
      let stopping = false;
      const stop = async () => {
        // Once only: under `npm run demo` a Ctrl-C arrives twice (from the terminal, and forwarded by npm).
        if (stopping) return;
        stopping = true;
        status.end();
        process.stdout.write('stopping: writers, daemon, database…\n');
        writers.abort();
        await Promise.allSettled(writing);
        await pool?.end();
        await runner?.stop();
        await metrics?.close();
        await (await opening.catch(() => undefined))?.close();
        process.stdout.write('demo stopped\n');
        process.exit(0);
      };
      // SIGHUP: the terminal was closed; stop as cleanly as on Ctrl-C rather than die and leave the server behind.
      for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(signal, () => void stop());
      if (options.duration) setTimeout(() => void stop(), Number(options.duration) * 1000).unref();

      // A stop() during start-up finishes the process itself; the start-up steps below just give way to it.
      let database: Awaited<typeof opening>;
      try {
        database = await opening;
        if (stopping) return;
        runner = new Runner({
          connectionString: database.connectionString,
          projections,
          log,
          gapTimeoutMs,
          pollIntervalMs: 1_000,
        });
        await runner.start();
      } catch (error) {
        if (stopping) return;
        throw error;
      }
      if (stopping) return;
      try {
        metrics = await startMetricsServer(runner, '127.0.0.1', Number(options.metricsPort), 60_000);
      } catch {
        metrics = await startMetricsServer(runner, '127.0.0.1', 0, 60_000);
      }
      if (stopping) return;
      // Not createPool(): its application_name marks the runner's own sessions, which gap evidence ignores; these
      // sessions are ordinary writers. Guarded all the same: a dropped connection must not crash the demo.
      pool = guardPoolErrors(
        new pg.Pool({ connectionString: database.connectionString, application_name: 'demo-writer', max: Number(options.writers) + 2 }),
      );
      const store = new EventStore(pool);
      writing = Array.from({ length: Number(options.writers) }, (_, i) => demoWriter(pool!, store, i, writers.signal, gapTimeoutMs));
      process.stdout.write(
        `projection-runner demo: ${projections.map((p) => p.name).join(', ')} on ${database.embedded ? 'the embedded PostgreSQL' : 'DATABASE_URL'}; ` +
          `metrics on http://127.0.0.1:${metrics.port}/metrics; Ctrl-C stops\n`,
      );

      while (!stopping) {
        await sleep(1_000);
        if (stopping) break;
        const value = async (
          metric: { get(): Promise<{ values: Array<{ value: number; labels: Record<string, unknown> }> }> },
          filter = (_: Record<string, unknown>) => true,
        ) => (await metric.get()).values.filter((v) => filter(v.labels)).reduce((sum, v) => sum + v.value, 0);
        const m = runner.metrics;
        const snapshot = await runner.lagSnapshot().catch(() => undefined);
        const lag = snapshot ? Math.max(...snapshot.projections.map((p) => Number(snapshot.head - p.checkpoint)), 0) : 0;
        const line =
          `applied ${await value(m.eventsApplied)}  head ${runner.positions.head}  high-water ${runner.positions.highWater}  lag ${lag}  ` +
          `open gaps ${await value(m.gapsOpen)}  resolved: filled ${await value(m.gapsResolved, (l) => l.resolution === 'filled')} ` +
          `dead ${await value(m.gapsResolved, (l) => l.resolution === 'dead')} timed_out ${await value(m.gapsResolved, (l) => l.resolution === 'timed_out')}  ` +
          `late ${await value(m.lateEvents)}`;
        if (!stopping) status.show(line);
      }
    });
}
