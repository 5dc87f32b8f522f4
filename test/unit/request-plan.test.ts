import { describe, expect, it } from 'vitest';
import { inProcessRefusal, type RequestKind } from '../../src/cli/request-plan.js';
import type { Projection } from '../../src/projection/projection.js';
import type { Build } from '../../src/versions/builds.js';

/**
 * Issue 26 item 5: a runner started in a command's process (no daemon owns the projection) serves the request and does
 * nothing else, or the command is refused before it changes anything.
 */
const module = (version: number): Projection => ({ name: 'acct', version, handle: async () => {} }) as Projection;

function build(version: number, role: Build['role'], codeVersion = version, switchMode: Build['switchMode'] = 'auto'): Build {
  return {
    slot: version === 1 ? 'acct' : `acct@v${version}`,
    projection: 'acct',
    version,
    codeVersion,
    schema: version === 1 ? null : `acct_v${version}`,
    role,
    switchMode,
    target: 0n,
    switchError: null,
    relations: null,
  };
}

const v1 = build(1, 'live');
const v1kept = build(1, 'kept');
const v2 = build(2, 'live');
const v2building = build(2, 'building', 1);

describe('inProcessRefusal: a runner here serves the request and nothing else', () => {
  it.each<[string, RequestKind, number, Build[], Build | undefined, RegExp | undefined]>([
    ['replay, no build yet: the runner here makes the first one', 'replay', 1, [], undefined, undefined],
    ['replay of the live version with its code', 'replay', 1, [v1], v1, undefined],
    [
      'replay with a newer module: it would build and switch version 2',
      'replay',
      2,
      [v1],
      v1,
      /version 1 is built by the code of module version 1, and --projections has version 2.*would build version 2 beside the live one and switch to it/,
    ],
    ['a newer module, no version acted on yet', 'retry', 2, [v1], undefined, /module version 2, which no version of acct is built from/],
    ['retry of a kept version', 'retry', 2, [v1kept, v2], v1kept, /version 1 is kept: nothing runs a kept version/],
    ['skip of a kept version with its own code', 'skip', 1, [v1kept, v2], v1kept, /version 1 is kept/],
    [
      'replay with an older module (the live code is newer)',
      'replay',
      1,
      [v1kept, v2],
      v2,
      /built by the code of module version 2, and --projections has version 1/,
    ],
    [
      'replay while a rebuild of the same code is under way',
      'replay',
      1,
      [v1, v2building],
      v1,
      /would also build version 2 \(building, switched to once caught up\)/,
    ],
    ['retry of the building version itself', 'retry', 1, [v1, v2building], v2building, /would also run version 1 \(live\)/],
    ['rebuild from the live code', 'rebuild', 1, [v1], v1, undefined],
    ['rebuild with a newer module', 'rebuild', 2, [v1], v1, /would build version 2/],
    ['switch to the version being built (the live one runs too)', 'switch', 1, [v1, v2building], v2building, undefined],
    ['switch back to a kept version with its code', 'switch', 1, [v1kept, build(2, 'live', 1)], v1kept, undefined],
    ['switch back to a kept version of other code', 'switch', 2, [v1kept, v2], v1kept, /built by the code of module version 1/],
  ])('%s', (_label, kind, version, builds, target, refused) => {
    const reason = inProcessRefusal({ kind, module: module(version), builds, target, switchMode: 'auto' });
    if (refused) expect(reason).toMatch(refused);
    else expect(reason).toBeUndefined();
  });
});
