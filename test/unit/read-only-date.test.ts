import { describe, expect, it } from 'vitest';
import { ReadOnlyDate } from '../../src/sources/read-only-event.js';

/** An event's recordedAt is shared by the projections that take the same page: a Date that cannot be changed. */
describe('ReadOnlyDate', () => {
  const ms = Date.UTC(2026, 10, 23, 12, 30, 15, 250);

  it('is a Date to everything that reads it', () => {
    const date = new ReadOnlyDate(ms);
    expect(date).toBeInstanceOf(Date);
    expect(date.getTime()).toBe(ms);
    expect(date.toISOString()).toBe('2026-11-23T12:30:15.250Z');
    expect(JSON.stringify({ at: date })).toBe('{"at":"2026-11-23T12:30:15.250Z"}');
    expect(new Date(date).getTime()).toBe(ms);
  });

  it('refuses every setter of Date, and stays unchanged', () => {
    const setters = Object.getOwnPropertyNames(Date.prototype).filter((n) => n.startsWith('set'));
    expect(setters).toContain('setTime');
    expect(setters).toContain('setUTCHours');
    const date = new ReadOnlyDate(ms) as unknown as Record<string, (...args: number[]) => unknown>;
    for (const name of setters) expect(() => date[name]!(0), name).toThrow(/events are read-only/);
    expect((date as unknown as Date).getTime()).toBe(ms);
  });
});
