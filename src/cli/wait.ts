import type { Command } from 'commander';
import { InvalidArgumentError } from 'commander';
import { parseDuration } from '../config.js';
import { parsePosition } from '../wait/decide.js';
import { ProjectionWaiter } from '../wait/waiter.js';
import { withDatabasePool } from './database.js';
import { addSettings, commandLogger, configFrom, CONNECTION_SETTINGS } from './options.js';

const DEFAULT_TIMEOUT = '10s';

/**
 * `projection-runner wait POSITION`: exit 0 once the read models have applied the position, 1 with the one-line
 * reason otherwise (deploy scripts, smoke tests, CI). The same waiter as the library's and the daemon's `/wait`.
 */
export function registerWait(program: Command): void {
  addSettings(
    program
      .command('wait')
      .description('wait until the read models have applied POSITION (every committed event at or below it); exit 1 on timeout or failure')
      .argument('<position>', 'a global position, as EventStore.append returned it (lastPosition)', (text) => {
        const position = parsePosition(text);
        if (position === undefined) throw new InvalidArgumentError(`a whole number from 0 is expected (got ${JSON.stringify(text)})`);
        return position;
      })
      .option('--projection <name>', 'wait for this projection (repeatable; default: every projection with a checkpoint)', collect, [])
      .option('--timeout <duration>', 'give up after this long', DEFAULT_TIMEOUT)
      .option('--json', 'print the outcome as JSON'),
    CONNECTION_SETTINGS,
  ).action(async (position: bigint, options: { projection: string[]; timeout: string; json?: boolean } & Record<string, unknown>) => {
    const config = configFrom(options);
    let timeoutMs: number;
    try {
      timeoutMs = parseDuration(options.timeout);
    } catch (error) {
      throw new InvalidArgumentError(`--timeout: ${(error as Error).message}`);
    }
    // Made only if the embedded database needs it (CommandLog): a short command with a DATABASE_URL loads no logger.
    const log = () => commandLogger(config);
    await withDatabasePool(config.databaseUrl, 'wait', log, async (pool) => {
      const waiter = new ProjectionWaiter({ ...config, pool });
      try {
        const projections = options.projection.length > 0 ? options.projection : undefined;
        const result = await waiter.waitFor(position, { projections, timeoutMs });
        const reached = Object.entries(result.projections);
        process.stdout.write(
          options.json
            ? `${JSON.stringify({ position: String(position), projections: Object.fromEntries(reached.map(([n, p]) => [n, String(p)])) })}\n`
            : `position ${position} applied by ${reached.map(([n]) => n).join(', ') || 'no projection (none has a checkpoint)'}\n`,
        );
      } finally {
        await waiter.close();
      }
    });
  });
}

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}
