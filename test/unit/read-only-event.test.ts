import v8 from 'node:v8';
import vm from 'node:vm';
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { ReadOnlyDate, readOnlyEvents, type EventTuple } from '../../src/sources/read-only-event.js';

/**
 * The event object handlers get (src/sources/read-only-event.ts): data, metadata and recordedAt kept as PostgreSQL's
 * text until first read, then parsed once, frozen and shared; the event itself frozen from the start.
 */
const { TEXT, JSONB, JSON: JSON_TYPE, TIMESTAMPTZ } = pg.types.builtins;
const fields = (dataType: number = JSONB) => [TEXT, TEXT, TEXT, TEXT, dataType, JSONB, TIMESTAMPTZ].map((dataTypeID) => ({ dataTypeID }));
const RECORDED = '2026-11-23 12:30:15.25+00';
const RECORDED_MS = Date.UTC(2026, 10, 23, 12, 30, 15, 250);

function event(data: string | null, metadata: string | null = '{"by":"clerk"}', dataType?: number) {
  const row: EventTuple = ['7', 'account-1', '3', 'Deposited', data, metadata, RECORDED];
  return readOnlyEvents([row], fields(dataType))[0]!;
}

describe('a read-only event', () => {
  it('has the seven fields of StoredEvent, own and enumerable, in their order, with their values', () => {
    const e = event('{"amount":5,"tags":["a"],"owner":{"name":"Ann"}}');
    expect(Object.keys(e)).toEqual(['globalPosition', 'streamName', 'streamPosition', 'type', 'data', 'metadata', 'recordedAt']);
    expect(e).toEqual({
      globalPosition: 7n,
      streamName: 'account-1',
      streamPosition: 3n,
      type: 'Deposited',
      data: { amount: 5, tags: ['a'], owner: { name: 'Ann' } },
      metadata: { by: 'clerk' },
      recordedAt: new Date(RECORDED_MS),
    });
    expect(e.recordedAt).toBeInstanceOf(ReadOnlyDate);
    expect(e.recordedAt.getTime()).toBe(RECORDED_MS);
  });

  it('parses a field once: the second read, and every reader after it, gets the same object', () => {
    const e = event('{"amount":5}');
    const [data, metadata, recordedAt] = [e.data, e.metadata, e.recordedAt];
    expect(e.data).toBe(data);
    expect(e.metadata).toBe(metadata);
    expect(e.recordedAt).toBe(recordedAt);
    // A copy (`{ ...event }`, as the late path makes) carries the parsed values themselves, read-only as they are.
    const copy = { ...e, late: true };
    expect(copy.data).toBe(data);
    expect(copy.recordedAt).toBe(recordedAt);
  });

  it('is frozen before any field is read: no field can be assigned, redefined or deleted', () => {
    const e = event('{"amount":5}') as unknown as Record<string, unknown>;
    for (const field of ['globalPosition', 'type', 'data', 'metadata', 'recordedAt', 'late']) {
      expect(() => (e[field] = 1), field).toThrow(TypeError);
      expect(() => Object.defineProperty(e, field, { value: 1 }), field).toThrow(TypeError);
      if (field !== 'late') expect(() => delete e[field], field).toThrow(TypeError);
    }
    expect(e.data).toEqual({ amount: 5 });
    expect(e.late).toBeUndefined();
  });

  it.each([
    ['a top-level field of data', (e: ReturnType<typeof event>) => (e.data.amount = 0)],
    ['a nested object of data', (e: ReturnType<typeof event>) => (e.data.owner.name = 'Bob')],
    ['an array in data', (e: ReturnType<typeof event>) => e.data.tags.push('b')],
    ['a new field of data', (e: ReturnType<typeof event>) => (e.data.extra = 1)],
    ['metadata', (e: ReturnType<typeof event>) => ((e.metadata as Record<string, unknown>).by = 'someone')],
    ['recordedAt', (e: ReturnType<typeof event>) => e.recordedAt.setTime(0)],
  ])('refuses a change to %s, on the first read and on later ones, and stays unchanged', (_, change) => {
    const e = event('{"amount":5,"tags":["a"],"owner":{"name":"Ann"}}');
    expect(() => change(e)).toThrow(TypeError);
    expect(() => change(e)).toThrow(TypeError);
    expect(e.data).toEqual({ amount: 5, tags: ['a'], owner: { name: 'Ann' } });
    expect(e.metadata).toEqual({ by: 'clerk' });
    expect(e.recordedAt.getTime()).toBe(RECORDED_MS);
  });

  it.each([
    ['null data (a column that allows it)', null, null],
    ['JSON null', 'null', null],
    ['a JSON string', '"text"', 'text'],
    ['a JSON number', '42', 42],
    ['a JSON array', '[1,{"a":2}]', [1, { a: 2 }]],
  ])('reads %s as the parser gives it', (_, text, value) => {
    const e = event(text);
    expect(e.data).toEqual(value);
    expect(e.data).toEqual(value);
    if (value !== null && typeof value === 'object') expect(Object.isFrozen(e.data)).toBe(true);
  });

  it('reads data of type json with the json parser, and a source without metadata as {} (frozen)', () => {
    const e = event('{"a": 1}', null, JSON_TYPE);
    expect(e.data).toEqual({ a: 1 });
    expect(e.metadata).toEqual({});
    expect(Object.isFrozen(e.metadata)).toBe(true);
  });

  it('parses the fields of each event for that event: two events with equal data, two objects', () => {
    const rows: EventTuple[] = [
      ['1', 's', '1', 'A', '{"same":true}', '{}', RECORDED],
      ['2', 's', '2', 'A', '{"same":true}', '{}', RECORDED],
    ];
    const [a, b] = readOnlyEvents(rows, fields());
    expect(a!.data).toEqual(b!.data);
    expect(a!.data).not.toBe(b!.data);
    expect(readOnlyEvents([], fields())).toEqual([]);
  });

  it('keeps a parsed value that is a string or null as parsed: a later read does not parse it again', () => {
    const e = event('"x"', 'null');
    expect([e.data, e.data, e.metadata, e.metadata]).toEqual(['x', 'x', {}, {}]);
    const nothing = event(null);
    expect([nothing.data, nothing.data]).toEqual([null, null]);
  });

  it('keeps its three texts, not the row it was read from: the row and its position texts die with the read', async () => {
    // A page's events live through a batch and the read-ahead: whatever each one holds is promoted with it.
    v8.setFlagsFromString('--expose-gc');
    const gc = vm.runInNewContext('gc') as () => void;
    let row: EventTuple | undefined = ['7', 'account-1', '3', 'Deposited', '{"amount":5}', '{}', RECORDED];
    const rowRef = new WeakRef(row);
    const [e] = readOnlyEvents([row], fields());
    row = undefined;
    // A WeakRef's target is kept until the job that made it is over.
    await new Promise((resolve) => setTimeout(resolve, 0));
    gc();
    expect(rowRef.deref()).toBeUndefined();
    expect(e!.data).toEqual({ amount: 5 });
    expect(e!.recordedAt.getTime()).toBe(RECORDED_MS);
  });
});
