import type { Command } from 'commander';
import { storeNames } from '../db/identifiers.js';
import { migrate } from '../db/migrate.js';
import { createLogger } from '../logger.js';
import { withDatabasePool } from './database.js';
import { addSettings, configFrom, CONNECTION_SETTINGS } from './options.js';

export function registerMigrate(program: Command): void {
  addSettings(program.command('migrate').description('create or upgrade the event store and runner tables'), CONNECTION_SETTINGS).action(
    async (options) => {
      const config = configFrom(options);
      const log = createLogger(config.logLevel);
      const names = storeNames(config);
      await withDatabasePool(config.databaseUrl, 'migrate', log, async (pool) => {
        const applied = await migrate(pool, names);
        log.info({ applied }, applied.length ? `applied migrations ${applied.join(', ')}` : 'schema is up to date');
      });
    },
  );
}
