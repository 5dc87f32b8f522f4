import { describe, expect, it } from 'vitest';
import { createLogger, prettyLogLine } from '../../src/logger.js';

describe('log lines for people', () => {
  it.each<[string, Record<string, unknown>, string]>([
    [
      'level, time, component, message, then the fields',
      {
        level: 40,
        time: '2026-12-07T12:03:04.567Z',
        pid: 7,
        name: 'projection-runner',
        component: 'high-water',
        msg: 'gap timed out',
        gap: '5..6',
      },
      '12:03:04.567 WARN  [high-water] gap timed out  gap=5..6',
    ],
    [
      'text with spaces quoted, objects as JSON',
      { level: 30, time: '2026-12-07T00:00:00.000Z', msg: 'runner started', owner: 'vm/1 a', projections: ['a', 'b'] },
      '00:00:00.000 INFO  runner started  owner="vm/1 a" projections=["a","b"]',
    ],
    [
      'an error by its message',
      {
        level: 50,
        time: '2026-12-07T00:00:00.000Z',
        msg: 'batch failed',
        err: { type: 'Error', message: 'boom', stack: 'Error: boom\n  at x' },
      },
      '00:00:00.000 ERROR batch failed  err="boom"',
    ],
  ])('%s', (_label, record, line) => expect(prettyLogLine(record)).toBe(line));

  it('colours the level only when asked', () => {
    expect(prettyLogLine({ level: 50, time: '2026-12-07T00:00:00.000Z', msg: 'x' }, true)).toBe('00:00:00.000 \u001b[31mERROR\u001b[0m x');
  });

  it('json or pretty, as asked, to the given writer; the password never', () => {
    const lines: string[] = [];
    createLogger('info', { format: 'json', write: (t) => lines.push(t) }).info({ connectionString: 'postgres://u:secret@h/db' }, 'hello');
    createLogger('info', { format: 'pretty', write: (t) => lines.push(t) }).info({ connectionString: 'postgres://u:secret@h/db' }, 'hello');
    expect(JSON.parse(lines[0]!)).toMatchObject({ level: 30, msg: 'hello', connectionString: '***' });
    expect(lines[1]).toMatch(/^\d\d:\d\d:\d\d\.\d{3} INFO {2}hello {2}connectionString=\*\*\*\n$/);
    expect(lines.join('')).not.toContain('secret');
  });
});
