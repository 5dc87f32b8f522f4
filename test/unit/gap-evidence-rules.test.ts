import { describe, expect, it } from 'vitest';
import { handedOutAfter, isProvenDead, pruneSamples, type SessionInfo } from '../../src/high-water/evidence-rules.js';
import { ActivityEvidence } from '../../src/high-water/evidence.js';

// A gap at position 42, first seen at t=1000. The sequence was at 40 at t=500 and at 45 at t=900.
const gap = { from: 42n, to: 42n, firstSeenAt: 1000 };
const samples = [
  { at: 500, lastValue: 40n },
  { at: 900, lastValue: 45n },
];
const session = (s: Partial<SessionInfo>): SessionInfo => ({ xactStart: 100, state: 'active', stateChange: 100, ...s });

describe('isProvenDead', () => {
  it.each<[string, SessionInfo[], number[], number, boolean]>([
    ['no session in a transaction: dead', [], [], 1100, true],
    ['evidence not newer than the sighting proves nothing', [], [], 1000, false],
    ['a transaction that began before the sighting and is active holds it', [session({ xactStart: 800 })], [], 1100, false],
    ['a transaction that began after the sighting cannot be the writer', [session({ xactStart: 1001 })], [], 1100, true],
    [
      'idle in transaction since before p existed: not the writer',
      [session({ state: 'idle in transaction', stateChange: 400 })],
      [],
      1100,
      true,
    ],
    [
      'idle in transaction since after p may have been taken: holds',
      [session({ state: 'idle in transaction', stateChange: 600 })],
      [],
      1100,
      false,
    ],
    [
      'aborted and quiet since before p existed: not the writer',
      [session({ state: 'idle in transaction (aborted)', stateChange: 400 })],
      [],
      1100,
      true,
    ],
    // ROLLBACK TO SAVEPOINT revives an aborted transaction: rows it wrote before the savepoint can still commit.
    [
      'aborted since after p may have been taken: holds (a savepoint can revive it)',
      [session({ state: 'idle in transaction (aborted)', stateChange: 600 })],
      [],
      1100,
      false,
    ],
    ['a hidden session (no privilege) holds it', [session({ xactStart: null, state: null })], [], 1100, false],
    [
      'a session with track_activities = off (state disabled) holds it',
      [session({ xactStart: null, state: 'disabled', stateChange: null })],
      [],
      1100,
      false,
    ],
    ['prepared before p existed: cannot hold p', [], [400], 1100, true],
    ['prepared after p may have been taken: holds', [], [600], 1100, false],
  ])('%s', (_label, sessions, preparedAt, takenAt, dead) => {
    expect(isProvenDead(gap, { takenAt, sessions, preparedAt }, samples)).toBe(dead);
  });

  it('without any sample below p, an idle session cannot be ruled out', () => {
    const idle = session({ state: 'idle in transaction', stateChange: 1 });
    expect(isProvenDead(gap, { takenAt: 1100, sessions: [idle], preparedAt: [] }, [{ at: 900, lastValue: 45n }])).toBe(false);
  });
});

describe('handedOutAfter', () => {
  it('is the latest sample time whose value was still below p', () => {
    expect(handedOutAfter(42n, samples)).toBe(500);
    expect(handedOutAfter(41n, samples)).toBe(500);
    expect(handedOutAfter(40n, samples)).toBe(Number.NEGATIVE_INFINITY);
  });
});

describe('pruneSamples', () => {
  it('keeps the newest sample below each open gap and the recent ones', () => {
    const many = Array.from({ length: 200 }, (_, i) => ({ at: i, lastValue: BigInt(i * 10) }));
    const kept = pruneSamples(many, [{ from: 55n, to: 55n, firstSeenAt: 0 }], 10);
    expect(kept).toContainEqual({ at: 5, lastValue: 50n });
    expect(kept.at(-1)).toEqual({ at: 199, lastValue: 1990n });
    expect(kept).toHaveLength(11);
  });
});

describe('sequence samples', () => {
  it('stay bounded over 100,000 passes of a steady writer without gaps', () => {
    // recordSample never touches the database; the pool is not needed for it.
    const evidence = new ActivityEvidence(undefined as never, "'seq'");
    for (let pass = 0; pass < 100_000; pass++) evidence.recordSample({ at: pass, lastValue: BigInt(pass * 3) }, []);
    expect(evidence.sampleCount).toBeLessThanOrEqual(65);
  });

  it('keep the sample an open gap needs, however many passes follow', () => {
    const evidence = new ActivityEvidence(undefined as never, "'seq'");
    const open = [{ from: 31n, to: 31n, firstSeenAt: 10 }];
    for (let pass = 0; pass < 10_000; pass++) evidence.recordSample({ at: pass, lastValue: BigInt(pass * 3) }, open);
    expect(evidence.sampleCount).toBeLessThanOrEqual(66);
    // The newest sample still below 31 (lastValue 30 at pass 10) is what rules out sessions idle since before it.
    expect(evidence.samplesBelow(31n)).toEqual([{ at: 10, lastValue: 30n }]);
  });
});
