import type { Command } from 'commander';
import { createLogger } from '../logger.js';
import { startMetricsServer, type MetricsServer } from '../metrics/server.js';
import { loadProjections } from '../runner/projection.js';
import { Runner } from '../runner/runner.js';
import { openDatabase } from './database.js';
import { addSettings, configFrom, runnerOptionsFrom } from './options.js';
import { SETTINGS } from '../config.js';

export function registerRun(program: Command): void {
  addSettings(
    program.command('run').description('run the projections: follow the event store, hold at gaps, apply in order'),
    SETTINGS.map((s) => s.key),
  ).action(async (options) => {
    const config = configFrom(options);
    const log = createLogger(config.logLevel);
    const projections = await loadProjections(config.projections);
    const database = await openDatabase(config.databaseUrl, log);
    const runner = new Runner(runnerOptionsFrom(config, database.connectionString, projections, log));

    let metricsServer: MetricsServer | undefined;
    let shuttingDown = false;
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
      await runner.stop();
      await metricsServer?.close();
      await database.close();
      clearTimeout(timer);
      process.exit(0);
    };
    process.on('SIGTERM', () => void shutdown('SIGTERM'));
    process.on('SIGINT', () => void shutdown('SIGINT'));

    // The metrics server comes up first: /healthz answers while the database is still being waited for.
    if (config.metricsPort !== 0) {
      metricsServer = await startMetricsServer(runner, config.metricsHost, config.metricsPort, config.watchdogMs);
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
