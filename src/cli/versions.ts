import type { Command } from 'commander';
import type pg from 'pg';
import type { RunnerConfig } from '../config.js';
import { storeNames, type StoreNames } from '../db/identifiers.js';
import { UsageError, VersionDependentsError, VersionRequestError } from '../errors.js';
import { prepareStore } from '../sources/prepare.js';
import type { Build } from '../versions/builds.js';
import { describeDrop, dropVersion, readBuilds, requestRebuild, requestSwitch, withdrawBuildRequest } from '../versions/builds-sql.js';
import type { SchemaDrop } from '../versions/schemas.js';
import { withDatabasePool } from './database.js';
import {
  addSettings,
  commandLogger,
  configFrom,
  confirm,
  CONNECTION_SETTINGS,
  operatorCommand,
  versionOption,
  yesOption,
} from './options.js';
import { serveRequest, type RequestTicket } from './request.js';
import { readStatus } from './status.js';

/**
 * Blue/green rebuilds: `rebuild NAME` builds the projection again from zero beside the live version, `switch NAME`
 * makes the version being built (or a kept one: `--version N`) live, `drop NAME --version N` deletes a kept version.
 * The daemon that runs the projection does the work (the request is a row and a NOTIFY, src/versions/builds-sql.ts);
 * without one, rebuild and switch run it in this process while they follow the progress.
 */
export function registerVersions(program: Command): void {
  operatorCommand(program, 'rebuild', 'build a projection again from position 0 beside its live version, then switch to it (no downtime)', [
    yesOption('not asked'),
  ]).action(async (name: string, options) => {
    const config = configFrom(options);
    await serveBuild(name, config, options.yes === true, {
      kind: 'rebuild',
      // The live version's code builds the new one.
      actedOn: (builds) => builds.find((b) => b.role === 'live'),
      question: (build) =>
        `Build "${name}" again beside its live version${build ? ` ${build.version}` : ''}, and switch to it once caught up${config.switchMode === 'manual' ? ' (--switch manual: on `switch`)' : ''}?`,
      request: async (pool, names) => {
        const build = await requestRebuild(pool, names, name, config.switchMode);
        process.stderr.write(`building version ${build.version} of ${name} in schema ${build.schema} beside the live version\n`);
        return { slot: build.slot, previous: undefined };
      },
    });
  });

  operatorCommand(program, 'switch', 'make the version being built live once it has caught up, or go back to a kept version (--version)', [
    versionOption('the kept version to make live again (it catches up first)'),
    yesOption('not asked'),
  ]).action(async (name: string, options) => {
    const config = configFrom(options);
    const version = options.version as number | undefined;
    await serveBuild(name, config, options.yes === true, {
      kind: 'switch',
      actedOn: (builds) => builds.find((b) => (version === undefined ? b.role === 'building' : b.version === version)),
      question: (build) =>
        `Make version ${build?.version ?? '?'} of "${name}" live once it has caught up? The application reads it from then on.`,
      request: async (pool, names, before) => {
        const build = await requestSwitch(pool, names, name, version);
        process.stderr.write(`switching ${name} to version ${build.version} once it has caught up\n`);
        return { slot: build.slot, previous: before };
      },
    });
  });

  addSettings(
    program
      .command('drop')
      .description('delete a kept version of a projection: the schema the runner created for it, its tables and checkpoint')
      .argument('<name>', 'projection name')
      .addOption(versionOption('the kept version to drop').makeOptionMandatory())
      .option('--cascade', 'also drop the objects outside the version that depend on it (listed when refused without it)')
      .addOption(yesOption('required')),
    CONNECTION_SETTINGS,
  ).action(async (name: string, options) => {
    const config = configFrom(options);
    const version = options.version as number;
    const cascade = options.cascade === true;
    const log = commandLogger(config);
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
 * A rebuild or switch through the one request path (src/cli/request.ts): `actedOn` is the build whose code does the
 * work (checked before the request when no daemon runs the projection), `request` returns the slot of the build that
 * will go live and its row before the request (what a withdrawal restores). Followed until the build is live (or,
 * switching manually, has caught up).
 */
async function serveBuild(
  name: string,
  config: RunnerConfig,
  yes: boolean,
  what: {
    kind: 'rebuild' | 'switch';
    actedOn: (builds: Build[]) => Build | undefined;
    question: (build: Build | undefined) => string;
    request: (pool: pg.Pool, names: StoreNames, before: Build | undefined) => Promise<{ slot: string; previous: Build | undefined }>;
  },
): Promise<void> {
  await serveRequest({
    kind: what.kind,
    name,
    config,
    yes,
    confirmation: 'at-terminal',
    target: ({ builds, status }) => {
      const build = what.actedOn(builds);
      // Any instance that runs a version of the projection runs the code of its release: it takes the build up.
      const owner = status.projections.find((p) => p.projection === name && p.owner)?.owner ?? null;
      return { build, owner, question: what.question(build) };
    },
    say: {
      owned: (owner) => `${name} is run by ${owner}: the daemon builds it; following its progress`,
      here: `no daemon runs ${name}: building in this process`,
    },
    request: async ({ pool, names }, { build }) => {
      const { slot, previous } = await what.request(pool, names, build);
      return buildTicket(pool, names, name, slot, previous);
    },
  });
}

/** Where a build stands: its role and its checkpoint against the H it started at. */
function buildTicket(pool: pg.Pool, names: StoreNames, name: string, slot: string, previous: Build | undefined): RequestTicket {
  const started = Date.now();
  let from: number | undefined;
  return {
    slot,
    carriesOn: `the build goes on wherever a daemon runs ${name} (see \`projection-runner status\`)`,
    withdraw: () => withdrawBuildRequest(pool, names, slot, previous),
    read: async (status) => {
      const build = (await readBuilds(pool, names, name)).find((b) => b.slot === slot);
      if (!build) throw new VersionRequestError(name, `${slot} was dropped while it was being built`);
      const state = status.projections.find((p) => p.name === slot);
      const position = state?.position ?? 0;
      from ??= position;
      const progress = { applied: position, target: Number(build.target), elapsedMs: Date.now() - started };
      if (build.role === 'live') {
        const seconds = (Date.now() - started) / 1000;
        return {
          kind: 'done',
          progress,
          // The checkpoint as it is now: the status the follower passes may be a little older than the switch.
          report: async () => {
            const at = (await readStatus(pool, names)).projections.find((p) => p.name === slot)?.position ?? position;
            const rate = Math.round((at - (from ?? at)) / Math.max(seconds, 0.001));
            return `${name}: version ${build.version} is live (checkpoint ${at}; ${at - (from ?? at)} events applied in ${seconds.toFixed(1)}s, ${rate} events/s)`;
          },
        };
      }
      if (build.role === 'kept')
        throw new VersionRequestError(name, `version ${build.version} was superseded by a newer one before it went live`);
      if (build.switchMode === 'manual' && position >= build.target && state?.state === 'rebuilding') {
        const line = `${name}: version ${build.version} has caught up (checkpoint ${position}); \`projection-runner switch ${name}\` makes it live`;
        return { kind: 'done', report: async () => line };
      }
      if (!state?.owner) return { kind: 'waiting' };
      return { kind: 'working', progress, note: build.switchError ? `switch postponed: ${build.switchError}` : undefined };
    },
  };
}
