import { describe, expect, it } from 'vitest';
import { covers, goesOn, pageBound, pagesToDrop, slicePage, withinBudget } from '../../src/sources/pages.js';

/** A page; its H defaults to its end (read up to H, not cut short). */
const page = (after: number, coveredTo: number, positions: number[], highWater = coveredTo) => ({
  after: BigInt(after),
  coveredTo: BigInt(coveredTo),
  highWater: BigInt(highWater),
  events: positions.map((p) => ({ globalPosition: BigInt(p) })),
});
const slice = (p: ReturnType<typeof page>, after: number, highWater: number, limit: number) => {
  const s = slicePage(p, { after: BigInt(after), highWater: BigInt(highWater), limit });
  return { events: s.events.map((e) => Number(e.globalPosition)), full: s.full, next: Number(s.next) };
};

describe('slicePage', () => {
  // (0, 10]: positions 3 and 7 are gaps (given up or never there), all of it read.
  const p = page(0, 10, [1, 2, 4, 5, 6, 8, 9, 10]);

  it('takes what follows the checkpoint up to H, and ends at H when it took less than its limit', () => {
    expect(slice(p, 0, 10, 100)).toEqual({ events: [1, 2, 4, 5, 6, 8, 9, 10], full: false, next: 10 });
    expect(slice(p, 4, 10, 100)).toEqual({ events: [5, 6, 8, 9, 10], full: false, next: 10 });
    // A batch whose own H is older takes the page up to the page's H: both are published values of H.
    expect(slice(p, 0, 7, 100)).toEqual({ events: [1, 2, 4, 5, 6, 8, 9, 10], full: false, next: 10 });
    // A page read under an older H than the batch's own: up to the page's end, then more to read.
    expect(slice(page(0, 10, [1, 2, 4, 5, 6, 8, 9, 10], 10), 0, 12, 100)).toEqual({
      events: [1, 2, 4, 5, 6, 8, 9, 10],
      full: true,
      next: 10,
    });
  });

  it('stops at its limit, at the last event taken, with more to read', () => {
    expect(slice(p, 0, 10, 3)).toEqual({ events: [1, 2, 4], full: true, next: 4 });
    expect(slice(p, 4, 10, 2)).toEqual({ events: [5, 6], full: true, next: 6 });
  });

  it('a limit reached exactly at the end is not full unless H is beyond the page', () => {
    expect(slice(p, 6, 10, 3)).toEqual({ events: [8, 9, 10], full: false, next: 10 });
    expect(slice(p, 6, 12, 3)).toEqual({ events: [8, 9, 10], full: true, next: 10 });
  });

  it('a page that ends before H says there is more (its reader saw a lower H, or was cut short)', () => {
    const cut = page(0, 4, [1, 2, 4], 4);
    expect(slice(cut, 2, 10, 100)).toEqual({ events: [4], full: true, next: 4 });
  });

  it('an empty stretch (only gaps) moves the checkpoint over it', () => {
    expect(slice(page(10, 20, []), 12, 20, 5)).toEqual({ events: [], full: false, next: 20 });
  });
});

describe('covers', () => {
  it('serves checkpoints from its start up to, not including, its end', () => {
    const p = page(10, 20, [11]);
    expect([9, 10, 15, 19, 20].map((a) => covers(p, BigInt(a)))).toEqual([false, true, true, true, false]);
  });
});

describe('pageBound', () => {
  it('reads up to H, or up to the next page held, so that a projection behind joins the pages ahead', () => {
    expect(pageBound(0n, 100n, [])).toBe(100n);
    expect(pageBound(0n, 100n, [50n, 80n])).toBe(50n);
    expect(pageBound(60n, 100n, [0n, 50n, 80n])).toBe(80n);
    expect(pageBound(0n, 40n, [50n])).toBe(40n);
    expect(pageBound(50n, 100n, [50n])).toBe(100n); // a page starting here is not a bound
  });
});

describe('pagesToDrop', () => {
  const pages = [page(0, 10, []), page(10, 20, []), page(20, 30, []), page(30, 40, [])];
  const drop = (checkpoints: number[], maxPages: number) => pagesToDrop(pages, checkpoints.map(BigInt), maxPages).map(Number);

  it('lets go of the pages every reader has passed', () => {
    expect(drop([20, 25], 10)).toEqual([0, 10]);
    expect(drop([40], 10)).toEqual([0, 10, 20, 30]);
  });

  it('keeps every page while a reader is still below it', () => {
    expect(drop([0, 35], 10)).toEqual([]);
  });

  it('beyond maxPages, lets go of the lowest first: the slowest reader reads on its own', () => {
    expect(drop([0, 35], 2)).toEqual([0, 10]);
    expect(drop([15], 1)).toEqual([0, 10, 20]);
  });

  it('without readers (all failed or stopped), holds nothing', () => {
    expect(drop([], 3)).toEqual([0, 10, 20, 30]);
  });
});

describe('goesOn', () => {
  const read = (after: number, coveredTo: number, positions: number[], cut: boolean | undefined, highWater = coveredTo) => ({
    ...page(after, coveredTo, positions, highWater),
    cut,
  });
  const goes = (p: ReturnType<typeof read>, after: number, highWater: number, limit: number, takenBefore = 0) => {
    const s = slicePage(p, { after: BigInt(after), highWater: BigInt(highWater), limit: limit - takenBefore });
    return goesOn(p, s, takenBefore + s.events.length, limit);
  };

  it('a batch whose H lies beyond the page it took goes on into the next one (live: pages as short as the steps of H)', () => {
    expect(goes(read(0, 10, [1, 2, 10], false), 0, 20, 100)).toBe(true);
    expect(goes(read(0, 10, [1, 2, 10], false), 5, 20, 100, 40)).toBe(true);
    // A page that ends before its own H (it stopped where the next page held starts): the batch goes on up to that H.
    expect(goes(read(0, 10, [1, 2, 10], false, 20), 0, 15, 100)).toBe(true);
  });

  it('stops at H, at its limit, and at a page cut at its size or bytes (or not known not to be)', () => {
    expect(goes(read(0, 10, [1, 2, 10], false), 0, 10, 100)).toBe(false); // reached H
    expect(goes(read(0, 10, [1, 2, 10], false), 0, 8, 100)).toBe(false); // the page's H (10) is newer than the batch's: reached
    expect(goes(read(0, 10, [1, 2, 10], false), 0, 20, 3)).toBe(false); // limit reached at the page's end
    expect(goes(read(0, 10, [1, 2, 10], false), 0, 20, 2)).toBe(false); // limit reached inside the page
    expect(goes(read(0, 10, [1, 2, 10], false), 0, 20, 5, 2)).toBe(false); // 2 + 3 = 5: the limit
    expect(goes(read(0, 10, [1, 2, 10], true), 0, 20, 100)).toBe(false); // cut: more may follow inside its bound
    expect(goes(read(0, 10, [1, 2, 10], undefined), 0, 20, 100)).toBe(false);
  });
});

describe('withinBudget', () => {
  const events = [1, 2, 4, 5].map((p) => ({ globalPosition: BigInt(p) }));
  const fit = (budget: number, full = false, next = 6) => {
    const r = withinBudget({ events, full, next: BigInt(next) }, 0n, () => 10, budget);
    return { events: r.slice.events.map((e) => Number(e.globalPosition)), full: r.slice.full, next: Number(r.slice.next), used: r.used };
  };

  it('keeps a slice that fits as it is', () => {
    expect(fit(40)).toEqual({ events: [1, 2, 4, 5], full: false, next: 6, used: 40 });
    expect(fit(100, true, 6)).toEqual({ events: [1, 2, 4, 5], full: true, next: 6, used: 40 });
  });

  it('cuts before the first event that does not fit: the batch ends at the last one taken, with more to read', () => {
    expect(fit(35)).toEqual({ events: [1, 2, 4], full: true, next: 4, used: 30 });
    expect(fit(10)).toEqual({ events: [1], full: true, next: 1, used: 10 });
  });

  it('when nothing fits, the batch ends where the slice started', () => {
    expect(fit(5)).toEqual({ events: [], full: true, next: 0, used: 0 });
  });
});
