import { describe, expect, it } from 'vitest';
import { claimOrder, excess, fairShare } from '../../src/ownership/balancing.js';

describe('fairShare', () => {
  it.each([
    [10, 1, 10],
    [10, 2, 5],
    [10, 3, 4],
    [9, 3, 3],
    [2, 5, 1],
    [0, 3, 0],
    [1, 1, 1],
  ])('%d projections over %d instances: %d each', (projections, instances, share) => {
    expect(fairShare(projections, instances)).toBe(share);
  });

  it('counts at least this instance, before its own lease shows', () => {
    expect(fairShare(7, 0)).toBe(7);
    expect(fairShare(7, -1)).toBe(7);
  });

  it('the shares always cover every projection', () => {
    for (let projections = 0; projections <= 30; projections++) {
      for (let instances = 1; instances <= 8; instances++) {
        expect(fairShare(projections, instances) * instances).toBeGreaterThanOrEqual(projections);
        expect(fairShare(projections, instances) * instances - projections).toBeLessThan(instances);
      }
    }
  });
});

describe('excess', () => {
  it.each([
    [5, 3, 2],
    [4, 4, 0],
    [2, 3, 0],
    [0, 0, 0],
    [10, 1, 9],
  ])('owning %d with a share of %d: give back %d', (owned, share, back) => {
    expect(excess(owned, share)).toBe(back);
  });
});

describe('claimOrder', () => {
  const projections = ['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h'];
  const owners = Array.from({ length: 40 }, (_, i) => `host-${i}/${1000 + i * 7}`);

  it('is empty without projections', () => {
    expect(claimOrder([], 'host/1')).toEqual([]);
  });

  it.each(owners)('for %s: every projection exactly once, in the original cyclic order', (owner) => {
    const order = claimOrder(projections, owner);
    expect([...order].sort()).toEqual(projections);
    const offset = projections.indexOf(order[0]!);
    expect(order).toEqual([...projections.slice(offset), ...projections.slice(0, offset)]);
  });

  it('is stable: the same owner gets the same order every time', () => {
    for (const owner of owners) expect(claimOrder(projections, owner)).toEqual(claimOrder(projections, owner));
  });

  it('does not reorder the list it was given', () => {
    const given = [...projections];
    claimOrder(given, 'host-3/77');
    expect(given).toEqual(projections);
  });

  it('spreads owners over different starting points', () => {
    const starts = new Set(owners.map((owner) => claimOrder(projections, owner)[0]));
    // 40 owners over 8 projections: a hash that sends most of them to one start defeats the point.
    expect(starts.size).toBeGreaterThanOrEqual(6);
    const counts = projections.map((p) => owners.filter((owner) => claimOrder(projections, owner)[0] === p).length);
    expect(Math.max(...counts)).toBeLessThanOrEqual(15);
  });

  it('handles owners whose hash is negative or the most negative integer', () => {
    // Java's string hash of 'zzzzzzzz' is -1910022912 and of 'polygenelubricants' is -2^31, whose negation is no int32:
    // an offset computed from them must still index the list (an index-based rotation would leave holes).
    for (const owner of ['zzzzzzzz', 'polygenelubricants']) {
      const order = claimOrder(projections, owner);
      expect([...order].sort()).toEqual(projections);
    }
  });

  it('works on a single projection and on any element type', () => {
    expect(claimOrder(['only'], 'host/1')).toEqual(['only']);
    const objects = [{ id: 1 }, { id: 2 }, { id: 3 }];
    expect(claimOrder(objects, 'host/1')).toHaveLength(3);
    expect(new Set(claimOrder(objects, 'host/1'))).toEqual(new Set(objects));
  });
});
