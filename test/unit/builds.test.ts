import { describe, expect, it } from 'vitest';
import { ReadNameTakenError, VersionRequestError } from '../../src/errors.js';
import { quoteIdentifier } from '../../src/db/identifiers.js';
import { validateProjection, type Projection } from '../../src/projection/projection.js';
import { buildsToRun, planBuild, planRebuild, switchStatements, type Build } from '../../src/versions/builds.js';

const module = (version?: number): Projection => ({ name: 'p', version, handle: async () => {} });
const build = (version: number, role: Build['role'], codeVersion = version): Build => ({
  slot: version === 1 ? 'p' : `p@v${version}`,
  projection: 'p',
  version,
  codeVersion,
  schema: version === 1 ? null : `p_v${version}`,
  role,
  switchMode: 'auto',
  target: 0n,
  switchError: null,
  relations: null,
});

describe('planBuild: what a deployment of a module needs', () => {
  it('the first build of a projection: live at once, in place, under its own name, whatever its version', () => {
    expect(planBuild(module(), [], 'auto')).toEqual({
      kind: 'create',
      build: { slot: 'p', projection: 'p', version: 1, codeVersion: 1, schema: null, role: 'live', switchMode: 'auto' },
    });
    expect(planBuild(module(3), [], 'manual')).toMatchObject({ build: { slot: 'p', version: 3, schema: null, role: 'live' } });
  });
  it('the same code again (any role): nothing', () => {
    expect(planBuild(module(1), [build(1, 'live')], 'auto')).toEqual({ kind: 'none' });
    expect(planBuild(module(1), [build(1, 'kept'), build(2, 'live')], 'auto')).toEqual({ kind: 'none' });
  });
  it('a higher version: a new build beside the live one, in schema name_vN; an older build in progress is superseded', () => {
    expect(planBuild(module(2), [build(1, 'live')], 'manual')).toEqual({
      kind: 'create',
      build: { slot: 'p@v2', projection: 'p', version: 2, codeVersion: 2, schema: 'p_v2', role: 'building', switchMode: 'manual' },
      supersedes: undefined,
    });
    // Version 2 taken by a rebuild of code 1: code 2 gets the next free number.
    expect(planBuild(module(2), [build(1, 'live'), build(2, 'building', 1)], 'auto')).toMatchObject({
      build: { slot: 'p@v3', version: 3, codeVersion: 2 },
      supersedes: 'p@v2',
    });
  });
  it('older code than the newest build: builds nothing (an old release during the overlap)', () => {
    expect(planBuild(module(1), [build(2, 'live')], 'auto')).toEqual({ kind: 'older', newest: 2 });
  });
});

describe('planRebuild and buildsToRun', () => {
  it('rebuild: the live code again under the next free version; refused without a live build or with one in progress', () => {
    expect(planRebuild('p', [build(1, 'kept'), build(2, 'live')], 'auto')).toMatchObject({ slot: 'p@v3', version: 3, codeVersion: 2 });
    expect(() => planRebuild('p', [], 'auto')).toThrow(VersionRequestError);
    expect(() => planRebuild('p', [build(1, 'live'), build(2, 'building')], 'auto')).toThrow(/version 2 is already being built/);
  });
  it("runs the live and building builds of the loaded code's version, never kept ones", () => {
    const builds = [build(1, 'kept'), build(2, 'live'), build(3, 'building', 2), build(4, 'building', 4)];
    expect(buildsToRun([module(2)], builds).map((u) => u.build.slot)).toEqual(['p@v2', 'p@v3']);
    expect(buildsToRun([module(1)], builds)).toEqual([]);
    expect(buildsToRun([], builds)).toEqual([]);
  });
});

describe('switchStatements', () => {
  const base = {
    projection: 'p',
    readSchema: 'public',
    nextSchema: 'p_v2',
    nextRelations: ['balances', 'totals'],
    quote: quoteIdentifier,
    nameTaken: (relation: string) => new ReadNameTakenError('p', relation),
  };
  it('from a build in place: its tables move to a schema of their own, then the names become views', () => {
    const plan = switchStatements({
      ...base,
      previous: { version: 1, inPlace: true, relations: ['balances', 'totals'] },
      existing: [
        { name: 'balances', kind: 'r', ours: false },
        { name: 'totals', kind: 'p', ours: false },
      ],
    });
    expect(plan.statements.map((s) => s.sql)).toEqual([
      'ALTER TABLE "public"."balances" SET SCHEMA "p_v1"',
      'ALTER TABLE "public"."totals" SET SCHEMA "p_v1"',
      'CREATE VIEW "public"."balances" AS SELECT * FROM "p_v2"."balances"',
      'CREATE VIEW "public"."totals" AS SELECT * FROM "p_v2"."totals"',
    ]);
    expect(plan).toMatchObject({ views: ['balances', 'totals'], movedTo: 'p_v1' });
    // Unknown relations (a setup the probe could not run): nothing is moved on a guess, the taken name stops it.
    expect(() =>
      switchStatements({
        ...base,
        previous: { version: 1, inPlace: true, relations: null },
        existing: [{ name: 'balances', kind: 'r', ours: false }],
      }),
    ).toThrow(ReadNameTakenError);
  });
  it('from a build in place whose setup is known: every relation it creates moves, also those the new one lacks', () => {
    const plan = switchStatements({
      ...base,
      nextRelations: ['accounts'],
      previous: { version: 1, inPlace: true, relations: ['balances', 'entries', 'entries_rest', 'summary', 'gone'] },
      existing: [
        { name: 'balances', kind: 'r', ours: false },
        { name: 'entries', kind: 'p', ours: false },
        { name: 'entries_rest', kind: 'r', ours: false },
        { name: 'summary', kind: 'm', ours: false },
      ],
    });
    expect(plan.statements.map((s) => s.sql)).toEqual([
      'ALTER TABLE "public"."balances" SET SCHEMA "p_v1"',
      'ALTER TABLE "public"."entries" SET SCHEMA "p_v1"',
      'ALTER TABLE "public"."entries_rest" SET SCHEMA "p_v1"',
      'ALTER MATERIALIZED VIEW "public"."summary" SET SCHEMA "p_v1"',
      'CREATE VIEW "public"."accounts" AS SELECT * FROM "p_v2"."accounts"',
    ]);
  });
  it("from a build with a schema: the runner's views are replaced (also one the new version no longer has)", () => {
    const plan = switchStatements({
      ...base,
      nextRelations: ['balances'],
      previous: { version: 2, inPlace: false, relations: null },
      existing: [
        { name: 'balances', kind: 'v', ours: true },
        { name: 'old_only', kind: 'v', ours: true },
      ],
    });
    expect(plan.statements).toEqual([
      { sql: 'DROP VIEW "public"."old_only"' },
      {
        sql: 'CREATE OR REPLACE VIEW "public"."balances" AS SELECT * FROM "p_v2"."balances"',
        orElse: ['DROP VIEW "public"."balances"', 'CREATE VIEW "public"."balances" AS SELECT * FROM "p_v2"."balances"'],
      },
    ]);
    expect(plan.locks).toEqual(['"public"."balances"', '"public"."old_only"']);
    expect(plan.movedTo).toBeUndefined();
  });
  it('a name taken by something else stops the switch before any statement', () => {
    const input = {
      ...base,
      previous: { version: 2, inPlace: false, relations: null },
      existing: [{ name: 'totals', kind: 'p', ours: false }],
    };
    expect(() => switchStatements(input)).toThrow(ReadNameTakenError);
    expect(() => switchStatements(input)).toThrow(/"public"\."totals" exists and does not belong to it/);
  });
});

describe('a versioned projection module', () => {
  it('refuses a version that is not a positive integer, and a name too long for its version schemas', () => {
    const p = { name: 'p', handle: async () => {} };
    for (const version of [0, -1, 1.5, '2'] as unknown[]) {
      expect(() => validateProjection({ ...p, version }, 'p.js')).toThrow(/version must be a positive integer/);
    }
    expect(validateProjection({ ...p, version: 3 }, 'p.js').version).toBe(3);
    expect(() => validateProjection({ ...p, name: 'x'.repeat(51) }, 'p.js')).toThrow(/at most 50 characters/);
    expect(validateProjection({ ...p, name: 'x'.repeat(50) }, 'p.js').name).toHaveLength(50);
  });
});
