import type { Command } from 'commander';
import { ReplayFailedError } from '../errors.js';
import { instanceName } from '../ownership/leases.js';
import { readReplay, requestReplay, withdrawRequest } from '../replay/requests.js';
import { configFrom, operatorCommand, yesOption } from './options.js';
import { formatSummary } from './progress.js';
import { ownerOf, serveRequest } from './request.js';
import { readStatus } from './status.js';

/** `replay NAME`: the live version's read model wiped and rebuilt from position 0 (src/replay/). */
export function registerReplay(program: Command): void {
  operatorCommand(program, 'replay', 'reset a projection and rebuild it from position 0, with progress (also while a daemon runs)', [
    yesOption('required'),
  ]).action(async (name: string, options) => {
    const config = configFrom(options);
    await serveRequest({
      kind: 'replay',
      name,
      config,
      yes: options.yes === true,
      confirmation: 'always',
      target: ({ builds, status }) => {
        // The live version's checkpoint (the projection's own name until a later version went live).
        const build = builds.find((b) => b.role === 'live');
        return {
          build,
          owner: ownerOf(status, build?.slot ?? name),
          question: `Replay "${name}" from position 0? Its read model will be wiped and rebuilt.`,
        };
      },
      say: {
        owned: (owner) => `${name} is run by ${owner}: the daemon rebuilds it; following its progress`,
        here: `no daemon runs ${name}: rebuilding in this process`,
      },
      request: async ({ pool, names }, { build }) => {
        const slot = build?.slot ?? name;
        const id = await requestReplay(pool, names, slot, instanceName());
        const started = Date.now();
        return {
          slot,
          carriesOn: `the replay of ${name} goes on wherever a daemon runs it (see \`projection-runner status\`)`,
          withdraw: () => withdrawRequest(pool, names, 'replays', id),
          read: async () => {
            const replay = await readReplay(pool, names, id);
            const progress = { applied: Number(replay.applied), target: Number(replay.target ?? 0), elapsedMs: Date.now() - started };
            if (replay.status === 'failed') throw new ReplayFailedError(name, replay.error ?? 'no error recorded');
            if (replay.status === 'pending') return { kind: 'waiting' };
            if (replay.status === 'running') return { kind: 'working', progress: replay.target === null ? undefined : progress };
            return {
              kind: 'done',
              progress: { ...progress, applied: Math.max(progress.applied, progress.target) },
              report: async () => {
                const position = (await readStatus(pool, names)).projections.find((p) => p.name === slot)?.position ?? 0;
                return formatSummary(name, progress, position);
              },
            };
          },
        };
      },
    });
  });
}
