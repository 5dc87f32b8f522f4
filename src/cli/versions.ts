import type { Command } from 'commander';
import type pg from 'pg';
import { storeNames, type StoreNames } from '../db/identifiers.js';
import { UsageError, VersionDependentsError, VersionRequestError } from '../errors.js';
import { createLogger } from '../logger.js';
import type { Runner } from '../runner/runner.js';
import { sleep } from '../shared/time.js';
import { prepareStore } from '../sources/prepare.js';
import { moduleVersion, type Build } from '../versions/builds.js';
import { describeDrop, dropVersion, readBuilds, requestRebuild, requestSwitch } from '../versions/builds-sql.js';
import type { SchemaDrop } from '../versions/schemas.js';
import { withDatabasePool } from './database.js';
import {
  addSettings,
  COMMAND_SETTINGS,
  configFrom,
  confirm,
  CONNECTION_SETTINGS,
  projectionNamed,
  runnerUnlessOwned,
  versionOption,
} from './options.js';
import { FOLLOW_INTERVAL_MS, formatProgress } from './progress.js';
import { readStatus } from './status.js';

/**
 * Blue/green rebuilds: `rebuild NAME` builds the projection again from zero beside the live version, `switch NAME`
 * makes the version being built (or a kept one: `--version N`) live, `drop NAME --version N` deletes a kept version.
 * The daemon that runs the projection does the work (the request is a row and a NOTIFY, src/versions/builds-sql.ts);
 * without one, rebuild and switch run it in this process while they follow the progress.
 */
export function registerVersions(program: Command): void {
  addSettings(
    program
      .command('rebuild')
      .description('build a projection again from position 0 beside its live version, then switch to it (no downtime)')
      .argument('<name>', 'projection name'),
    COMMAND_SETTINGS,
  ).action(async (name: string, options) => {
    const config = configFrom(options);
    const live = (builds: Build[]) => builds.find((b) => b.role === 'live');
    await acting(name, config, 'rebuild', live, async (pool, names) => {
      const build = await requestRebuild(pool, names, name, config.switchMode);
      process.stderr.write(`building version ${build.version} of ${name} in schema ${build.schema} beside the live version\n`);
      return build.slot;
    });
  });

  addSettings(
    program
      .command('switch')
      .description('make the version being built live once it has caught up, or go back to a kept version (--version)')
      .argument('<name>', 'projection name')
      .addOption(versionOption('the kept version to make live again (it catches up first)')),
    COMMAND_SETTINGS,
  ).action(async (name: string, options) => {
    const config = configFrom(options);
    const version = options.version as number | undefined;
    const target = (builds: Build[]) => builds.find((b) => (version === undefined ? b.role === 'building' : b.version === version));
    await acting(name, config, 'switch', target, async (pool, names) => {
      const build = await requestSwitch(pool, names, name, version);
      process.stderr.write(`switching ${name} to version ${build.version} once it has caught up\n`);
      return build.slot;
    });
  });

  addSettings(
    program
      .command('drop')
      .description('delete a kept version of a projection: the schema the runner created for it, its tables and checkpoint')
      .argument('<name>', 'projection name')
      .addOption(versionOption('the kept version to drop').makeOptionMandatory())
      .option('--cascade', 'also drop the objects outside the version that depend on it (listed when refused without it)')
      .option('--yes', 'do not ask for confirmation (required without a terminal)'),
    CONNECTION_SETTINGS,
  ).action(async (name: string, options) => {
    const config = configFrom(options);
    const version = options.version as number;
    const cascade = options.cascade === true;
    const log = createLogger(config.logLevel === 'info' ? 'warn' : config.logLevel);
    await withDatabasePool(config.databaseUrl, 'drop', log, async (pool) => {
      const names = storeNames(config);
      await prepareStore(pool, names);
      // What will be dropped, refused before asking when it reaches outside the version without --cascade; the drop
      // checks it again in its transaction (dropVersionSchema).
      const planned = await describeDrop(pool, names, name, version);
      if (planned.kind === 'ours' && planned.dependents.length > 0 && !cascade) {
        throw new VersionDependentsError(name, planned.schema, planned.dependents);
      }
      if (!options.yes) {
        if (!process.stdin.isTTY) throw new UsageError('no terminal to confirm on: pass --yes to drop without asking');
        if (!(await confirm(`Drop version ${version} of "${name}"? ${dropSummary(planned)}`))) {
          process.stderr.write('drop cancelled\n');
          return;
        }
      }
      const { dropped } = await dropVersion(pool, names, name, version, { cascade });
      process.stdout.write(`dropped version ${version} of ${name}: ${dropSummary(dropped)}\n`);
    });
  });
}

/** What a drop removes, in words: the prompt's and the report's (the same description, before and after). */
export function dropSummary(drop: SchemaDrop): string {
  const bookkeeping = 'its checkpoint and bookkeeping';
  if (drop.kind === 'none') return `${drop.schema ? `no schema ${drop.schema} to delete; ` : ''}${bookkeeping}`;
  if (drop.kind === 'not-ours') {
    return `${bookkeeping}; schema ${drop.schema} stays: the runner did not create it (or created it before recording its schemas), drop it yourself once you have checked its contents`;
  }
  const outside = drop.dependents.length > 0 ? `, and outside it (--cascade): ${drop.dependents.join(', ')}` : '';
  return `schema ${drop.schema} and everything in it (${drop.objects.join(', ') || 'nothing'})${outside}; ${bookkeeping}`;
}

/**
 * A rebuild or switch: the request (`request`, returning the slot of the build that will go live), then the work by
 * the daemon that runs the projection, or by a runner in this process when none does, followed until the build is live
 * (or, switching manually, has caught up). Without a daemon, this process must have the code that builds it (the
 * code of `actedOn`, the build the request will act on): checked before the request, so a refusal changes nothing.
 */
async function acting(
  name: string,
  config: ReturnType<typeof configFrom>,
  what: 'rebuild' | 'switch',
  actedOn: (builds: Build[]) => Build | undefined,
  request: (pool: pg.Pool, names: StoreNames) => Promise<string>,
): Promise<void> {
  const { projection, log } = await projectionNamed(name, config);
  const names = storeNames(config);
  await withDatabasePool(
    config.databaseUrl,
    what,
    log,
    async (pool, connectionString) => {
      let runner: Runner | undefined;
      try {
        await prepareStore(pool, names);
        const owner = (await readStatus(pool, names)).projections.find((p) => p.projection === name && p.owner)?.owner;
        const build = actedOn(await readBuilds(pool, names, name));
        if (!owner && build && build.codeVersion !== moduleVersion(projection)) {
          throw new VersionRequestError(
            name,
            `version ${build.version} is built by the code of module version ${build.codeVersion}, and --projections has version ${moduleVersion(projection)}, with no daemon running it: run this command with that code (nothing was changed)`,
          );
        }
        const slot = await request(pool, names);
        runner = await runnerUnlessOwned(
          owner,
          { config, connectionString, projection, log },
          {
            owned: (owner) => `${name} is run by ${owner}: the daemon builds it; following its progress`,
            here: `no daemon runs ${name}: building in this process`,
          },
        );
        await followBuild(pool, names, name, slot);
      } finally {
        await runner?.stop();
      }
    },
    2,
  );
}

/** Progress of a build (its checkpoint against the H it started at) until it is live, or caught up in manual mode. */
async function followBuild(pool: pg.Pool, names: StoreNames, name: string, slot: string): Promise<void> {
  const started = Date.now();
  const tty = process.stderr.isTTY;
  let lastPrinted = 0;
  let from: number | undefined;
  for (;;) {
    const build: Build | undefined = (await readBuilds(pool, names, name)).find((b) => b.slot === slot);
    if (!build) throw new VersionRequestError(name, `${slot} was dropped while it was being built`);
    const status = (await readStatus(pool, names)).projections.find((p) => p.name === slot);
    const position = status?.position ?? 0;
    from ??= position;
    const progress = { applied: position, target: Number(build.target), elapsedMs: Date.now() - started };
    if (build.role === 'live') {
      if (tty) process.stderr.write(`\r${formatProgress({ ...progress, applied: Math.max(position, progress.target) })}\n`);
      const seconds = (Date.now() - started) / 1000;
      const rate = Math.round((position - from) / Math.max(seconds, 0.001));
      process.stdout.write(
        `${name}: version ${build.version} is live (checkpoint ${position}; ${position - from} events applied in ${seconds.toFixed(1)}s, ${rate} events/s)\n`,
      );
      return;
    }
    if (build.role === 'kept')
      throw new VersionRequestError(name, `version ${build.version} was superseded by a newer one before it went live`);
    if (build.switchMode === 'manual' && position >= build.target && status?.state === 'rebuilding') {
      process.stdout.write(
        `${name}: version ${build.version} has caught up (checkpoint ${position}); \`projection-runner switch ${name}\` makes it live\n`,
      );
      return;
    }
    const line = `${formatProgress(progress)}${build.switchError ? `  (switch postponed: ${build.switchError})` : ''}`;
    if (tty) process.stderr.write(`\r${line}`);
    else if (Date.now() - lastPrinted > 1_000) {
      process.stderr.write(`${line}\n`);
      lastPrinted = Date.now();
    }
    await sleep(FOLLOW_INTERVAL_MS);
  }
}
