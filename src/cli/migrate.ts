import type { Command } from 'commander';
import { storeNames } from '../db/identifiers.js';
import { createLogger } from '../logger.js';
import { prepareStore } from '../sources/prepare.js';
import { withDatabasePool } from './database.js';
import { addSettings, configFrom, CONNECTION_SETTINGS } from './options.js';

export function registerMigrate(program: Command): void {
  addSettings(
    program
      .command('migrate')
      .description(
        'create or upgrade the runner tables (and the native events table; for a foreign source, what reading needs on its table)',
      ),
    CONNECTION_SETTINGS,
  ).action(async (options) => {
    const config = configFrom(options);
    const log = createLogger(config.logLevel, { format: config.logFormat });
    const names = storeNames(config);
    await withDatabasePool(
      config.databaseUrl,
      'migrate',
      log,
      async (pool) => {
        const { applied, attached } = await prepareStore(pool, names);
        const source = { source: names.source.kind, table: names.q.events };
        log.info({ applied, ...source }, applied.length ? `applied migrations ${applied.join(', ')}` : 'schema is up to date');
        for (const done of attached) log.info(source, done);
        if (names.source.kind !== 'native') {
          if (attached.length === 0) log.info(source, `${names.q.events}: nothing to add for reading`);
          if (!names.source.notifyTrigger)
            log.info(source, `--no-notify-trigger: ${names.q.events} left alone; the runner wakes on --poll-interval`);
        }
      },
      2,
    );
  });
}
