import { describe, expect, it } from 'vitest';
import { describeResult } from '../../src/cli/recover.js';
import { resolveConfig } from '../../src/config.js';
import { ConfigError, describeThrown, HandlerError, OwnershipLostError, ProjectionLoadError } from '../../src/errors.js';
import { validateProjection } from '../../src/projection/projection.js';
import { classifyBatchFailure } from '../../src/projector/failure.js';
import type { StoredEvent } from '../../src/store/types.js';

const event = { globalPosition: 7n, type: 'E' } as StoredEvent;

describe('classifyBatchFailure: by where the error came from, never by its code or message', () => {
  it.each([
    [
      'a handler fault, even with a network code',
      new HandlerError(event, Object.assign(new Error('Connection terminated'), { code: 'ECONNREFUSED' })),
      'handler',
    ],
    ['ownership lost', new OwnershipLostError('p'), 'ownership'],
    ["a runner statement's error, whatever its code", Object.assign(new Error('permission denied'), { code: '42501' }), 'database'],
    ['anything else the runner threw', 'odd', 'database'],
  ])('%s', (_label, error, kind) => {
    expect(classifyBatchFailure(error)).toBe(kind);
  });
});

describe('describeThrown never throws', () => {
  it.each([
    [new Error('boom'), 'boom'],
    ['text', 'text'],
    [undefined, 'undefined'],
    [Object.create(null), '[object Object]'],
    [{ code: 1 }, '{"code":1}'],
    [10n, '10'],
  ])('%s', (thrown, text) => {
    expect(describeThrown(thrown)).toBe(text);
    expect(new HandlerError(event, thrown).message).toBe(`handler failed at position 7 (E): ${text}`);
  });
});

describe('onError', () => {
  it('is validated in the module', () => {
    expect(() => validateProjection({ name: 'p', handle: async () => {}, onError: 'ignore' }, 'p.js')).toThrow(ProjectionLoadError);
    expect(validateProjection({ name: 'p', handle: async () => {}, onError: 'skip' }, 'p.js').onError).toBe('skip');
  });

  it('--on-error has no default (the module decides) and refuses anything but stop or skip', () => {
    expect(resolveConfig({}, {}).onError).toBeUndefined();
    expect(resolveConfig({}, { PROJECTION_RUNNER_ON_ERROR: 'skip' }).onError).toBe('skip');
    expect(() => resolveConfig({ onError: 'drop' }, {})).toThrow(ConfigError);
    expect(() => resolveConfig({ onError: 'drop' }, {})).toThrow(/--on-error \(PROJECTION_RUNNER_ON_ERROR\)/);
  });
});

describe('the line a command prints', () => {
  it.each([
    ['retry', { resumed: true, state: 'running', position: '9' }, 'retry p: resumed; checkpoint at 9 (running)'],
    [
      'retry',
      { resumed: false, state: 'running', position: '9' },
      'retry p: was not failed (running): nothing to resume; checkpoint at 9 (running)',
    ],
    [
      'retry',
      { redelivered: 2, resumed: false, state: 'running', position: '9' },
      'retry p: re-delivered 2 dead letters, was not failed (running): nothing to resume; checkpoint at 9 (running)',
    ],
    [
      'skip',
      { skipped: '4', resumed: true, state: 'catching_up', position: '4' },
      'skip p: dead-lettered position 4, resumed; checkpoint at 4 (catching_up)',
    ],
  ] as const)('%s %j', (command, result, line) => {
    expect(describeResult('p', command, result)).toBe(line);
  });
});
