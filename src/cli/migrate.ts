import type { Command } from 'commander';
import { createPool } from '../db/connection.js';
import { storeNames } from '../db/identifiers.js';
import { migrate } from '../db/migrate.js';
import { createLogger } from '../logger.js';
import { checkConnection, openDatabase } from './database.js';
import { addSettings, configFrom, CONNECTION_SETTINGS } from './options.js';

export function registerMigrate(program: Command): void {
  addSettings(program.command('migrate').description('create or upgrade the event store and runner tables'), CONNECTION_SETTINGS).action(
    async (options) => {
      const config = configFrom(options);
      const log = createLogger(config.logLevel);
      const names = storeNames(config);
      const database = await openDatabase(config.databaseUrl, log);
      try {
        await checkConnection(database.connectionString);
        const pool = createPool(database.connectionString, 'migrate', 1);
        try {
          const applied = await migrate(pool, names);
          log.info({ applied }, applied.length ? `applied migrations ${applied.join(', ')}` : 'schema is up to date');
        } finally {
          await pool.end();
        }
      } finally {
        await database.close();
      }
    },
  );
}
