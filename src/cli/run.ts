import type { Command } from 'commander';
import { createLogger } from '../logger.js';
import { startMetricsServer, type MetricsServer } from '../metrics/server.js';
import { loadProjections } from '../projection/loader.js';
import { Runner } from '../runner/runner.js';
import { openDatabase } from './database.js';
import { addSettings, configFrom } from './options.js';
import { runnerOptionsFrom } from './runner-options.js';
import { SETTINGS } from '../config.js';
import { ProjectionWaiter } from '../wait/waiter.js';

export function registerRun(program: Command): void {
  addSettings(
    program.command('run').description('run the projections: follow the event store, hold at gaps, apply in order'),
    SETTINGS.map((s) => s.key),
  ).action(async (options) => {
    const config = configFrom(options);
    const log = createLogger(config.logLevel, { format: config.logFormat });
    const projections = await loadProjections(config.projections);
    let runner: Runner | undefined;
    let metricsServer: MetricsServer | undefined;
    let waiter: ProjectionWaiter | undefined;
    let shuttingDown = false;
    // The signal handlers exist before the embedded database is started: a Ctrl-C at any moment stops what was
    // started, in order (the runner finishes its batches, then the database it started stops). The embedded server
    // runs in its own process group, so the terminal's SIGINT reaches us only, never the server under the runner.
    const opening = openDatabase(config.databaseUrl, log);
    const shutdown = async (signal: string) => {
      if (shuttingDown) {
        log.warn({ signal }, 'second signal: exiting now');
        process.exit(1);
      }
      shuttingDown = true;
      log.info({ signal, timeoutMs: config.shutdownTimeoutMs }, 'shutting down: finishing the current batches');
      const timer = setTimeout(() => {
        log.error('shutdown timeout reached: exiting without waiting further');
        process.exit(1);
      }, config.shutdownTimeoutMs);
      timer.unref();
      await runner?.stop();
      await metricsServer?.close();
      await waiter?.close();
      await (await opening.catch(() => undefined))?.close();
      clearTimeout(timer);
      process.exit(0);
    };
    // SIGHUP: the terminal went away; stop as cleanly as on Ctrl-C rather than die and leave the server behind.
    for (const signal of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) process.on(signal, () => void shutdown(signal));

    let database: Awaited<typeof opening>;
    try {
      database = await opening;
    } catch (error) {
      if (shuttingDown) return; // a signal during start-up: shutdown() ends the process
      throw error;
    }
    if (shuttingDown) return;
    runner = new Runner(runnerOptionsFrom(config, database.connectionString, projections, log));
    // /wait: one waiter (one connection, opened at the first wait) for every request.
    waiter = new ProjectionWaiter({ ...config, connectionString: database.connectionString });

    // The metrics server comes up first: /healthz answers while the database is still being waited for.
    if (config.metricsPort !== 0) {
      metricsServer = await startMetricsServer(runner, config.metricsHost, config.metricsPort, config.watchdogMs, waiter);
      log.info({ host: config.metricsHost, port: metricsServer.port }, 'metrics server listening');
    }
    try {
      await runner.start();
    } catch (error) {
      if (shuttingDown) return;
      await metricsServer?.close();
      await runner.stop();
      await database.close();
      throw error;
    }
    // Runs until a signal arrives.
    await new Promise(() => {});
  });
}
