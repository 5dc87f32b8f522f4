import type { Projection, SwitchMode } from '../projection/projection.js';
import { buildsToRun, moduleVersion, planBuild, type Build } from '../versions/builds.js';

/**
 * Whether a runner started in the command's own process (no daemon owns the projection) would serve an operator
 * request and do nothing else. Pure: decided from the builds read before anything changes, so a refusal changes
 * nothing. Such a runner runs every live and building version of the code it was given (buildsToRun) and, at start,
 * creates the build a newer module needs (planBuild); a replay that ran one would build and switch a version it was
 * never asked to.
 */

export type RequestKind = 'replay' | 'retry' | 'skip' | 'rebuild' | 'switch';

export interface InProcessInput {
  kind: RequestKind;
  /** The module --projections gives for the projection. */
  module: Projection;
  /** The projection's builds. */
  builds: Build[];
  /**
   * The build whose code serves the request: the slot a replay, retry or skip acts on, the live build a rebuild
   * builds again, the version a switch makes live; undefined when the projection has no build yet.
   */
  target: Build | undefined;
  switchMode: SwitchMode;
}

/** Undefined: a runner here serves the request and nothing else; else why not (nothing was changed yet). */
export function inProcessRefusal({ kind, module, builds, target, switchMode }: InProcessInput): string | undefined {
  const version = moduleVersion(module);
  const mine = builds.filter((b) => b.projection === module.name);
  if (mine.length === 0) return undefined; // its first build, made in place by the runner here: what the command asks
  const live = mine.find((b) => b.role === 'live');
  const plan = planBuild(module, mine, switchMode);
  const wouldBuild =
    plan.kind === 'create' ? `a runner here would build version ${plan.build.version} beside the live one and switch to it` : undefined;
  if (target?.role === 'kept' && kind !== 'switch') {
    return `version ${target.version} is kept: nothing runs a kept version (\`projection-runner switch ${module.name} --version ${target.version}\` makes it live again)`;
  }
  if (target && target.codeVersion !== version) {
    return (
      `version ${target.version} is built by the code of module version ${target.codeVersion}, and --projections has ` +
      `version ${version}, with no daemon running it: run this command with that code${wouldBuild ? ` (with this code, ${wouldBuild})` : ''}`
    );
  }
  if (wouldBuild) {
    return (
      `--projections has module version ${version}, which no version of ${module.name} is built from: ${wouldBuild}. Run ` +
      `this command with the code of the live version${live ? ` (module version ${live.codeVersion})` : ''}, or start the daemon with the new code, which builds it`
    );
  }
  if (!target) return undefined;
  // The versions a runner here would run besides the target: the live one is what a rebuild or a switch builds from.
  const besides = buildsToRun([module], mine)
    .map((u) => u.build)
    .filter((b) => b.slot !== target.slot && !((kind === 'rebuild' || kind === 'switch') && b.role === 'live'));
  const other = besides[0];
  if (other) {
    return (
      `a runner here would also ${other.role === 'building' ? 'build' : 'run'} version ${other.version} (${other.role}` +
      `${other.role === 'building' && other.switchMode === 'auto' ? ', switched to once caught up' : ''}): ` +
      `start the daemon with this code (\`projection-runner run\`), which serves the ${kind}`
    );
  }
  return undefined;
}
