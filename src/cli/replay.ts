import type { Command } from 'commander';
import { createPool } from '../db/connection.js';
import { storeNames } from '../db/identifiers.js';
import { ReplayFailedError, UsageError } from '../errors.js';
import { readReplay, requestReplay } from '../replay/requests.js';
import { Runner } from '../runner/runner.js';
import { sleep } from '../shared/time.js';
import { withDatabasePool } from './database.js';
import { addSettings, configFrom, confirm, runnerUnlessOwned, projectionNamed, COMMAND_SETTINGS } from './options.js';
import { FOLLOW_INTERVAL_MS, formatProgress, formatSummary } from './progress.js';
import { readStatus } from './status.js';
import { instanceName } from '../ownership/leases.js';
import { prepareStore } from '../sources/prepare.js';
import { slotFor } from '../versions/builds-sql.js';

export function registerReplay(program: Command): void {
  addSettings(
    program
      .command('replay')
      .description('reset a projection and rebuild it from position 0, with progress (also while a daemon runs)')
      .argument('<name>', 'projection name')
      .option('--yes', 'do not ask for confirmation (required without a terminal)'),
    COMMAND_SETTINGS,
  ).action(async (name: string, options) => {
    const config = configFrom(options);
    const { projection, log } = await projectionNamed(name, config);
    if (!options.yes) {
      if (!process.stdin.isTTY) throw new UsageError('no terminal to confirm on: pass --yes to replay without asking');
      if (!(await confirm(`Replay "${name}" from position 0? Its read model will be wiped and rebuilt.`))) {
        process.stderr.write('replay cancelled\n');
        return;
      }
    }
    const names = storeNames(config);
    await withDatabasePool(
      config.databaseUrl,
      'replay',
      log,
      async (pool, connectionString) => {
        let runner: Runner | undefined;
        try {
          await prepareStore(pool, names);
          // The live version's checkpoint (the projection's own name until a later version went live).
          const slot = await slotFor(pool, names, name);
          const replayId = await requestReplay(pool, names, slot, instanceName());
          const owner = (await readStatus(pool, names)).projections.find((p) => p.name === slot)?.owner;
          runner = await runnerUnlessOwned(
            owner,
            { config, connectionString, projection, log },
            {
              owned: (owner) => `${name} is run by ${owner}: the daemon rebuilds it; following its progress`,
              here: `no daemon runs ${name}: rebuilding in this process`,
            },
          );
          await follow(pool, names, replayId, slot);
        } finally {
          await runner?.stop();
        }
      },
      2,
    );
  });
}

async function follow(pool: ReturnType<typeof createPool>, names: ReturnType<typeof storeNames>, id: bigint, name: string) {
  const started = Date.now();
  const tty = process.stderr.isTTY;
  let lastPrinted = 0;
  for (;;) {
    const replay = await readReplay(pool, names, id);
    const progress = { applied: Number(replay.applied), target: Number(replay.target ?? 0), elapsedMs: Date.now() - started };
    if (replay.status === 'failed') throw new ReplayFailedError(name, replay.error ?? 'no error recorded');
    if (replay.status === 'done') {
      if (tty) process.stderr.write(`\r${formatProgress({ ...progress, applied: Math.max(progress.applied, progress.target) })}\n`);
      const status = (await readStatus(pool, names)).projections.find((p) => p.name === name);
      process.stdout.write(`${formatSummary(name, progress, status?.position ?? 0)}\n`);
      return;
    }
    if (replay.status === 'running' && replay.target !== null) {
      if (tty) process.stderr.write(`\r${formatProgress(progress)}`);
      else if (Date.now() - lastPrinted > 1_000) {
        process.stderr.write(`${formatProgress(progress)}\n`);
        lastPrinted = Date.now();
      }
    }
    await sleep(FOLLOW_INTERVAL_MS);
  }
}
