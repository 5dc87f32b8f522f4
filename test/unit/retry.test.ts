import { describe, expect, it } from 'vitest';
import { backoffDelay, isRetryableDatabaseError } from '../../src/db/retry.js';

const withCode = (code: unknown, message = 'x') => Object.assign(new Error(message), { code });

describe('backoffDelay', () => {
  it('doubles from the base per attempt (the top of the jitter range)', () => {
    const top = (attempt: number) => backoffDelay(attempt, { random: () => 1 });
    expect([1, 2, 3, 4, 5, 6].map(top)).toEqual([100, 200, 400, 800, 1_600, 3_200]);
  });

  it('never exceeds the cap, however many attempts', () => {
    expect(backoffDelay(7, { random: () => 1 })).toBe(5_000);
    expect(backoffDelay(1_000, { random: () => 1 })).toBe(5_000);
    expect(backoffDelay(5, { baseMs: 10, maxMs: 50, random: () => 1 })).toBe(50);
  });

  it('full jitter over the upper half: from ceiling/2 (random 0) to the ceiling (random 1)', () => {
    expect(backoffDelay(3, { random: () => 0 })).toBe(200);
    expect(backoffDelay(3, { random: () => 0.5 })).toBe(300);
    expect(backoffDelay(3, { random: () => 1 })).toBe(400);
    expect(backoffDelay(30, { random: () => 0 })).toBe(2_500);
  });

  it('counts attempts from 1: attempt 0 or below is the first delay, not a fraction of it', () => {
    const first = backoffDelay(1, { random: () => 1 });
    expect(backoffDelay(0, { random: () => 1 })).toBe(first);
    expect(backoffDelay(-3, { random: () => 1 })).toBe(first);
  });

  it('takes its own base and cap', () => {
    expect(backoffDelay(1, { baseMs: 7, random: () => 1 })).toBe(7);
    expect(backoffDelay(3, { baseMs: 7, maxMs: 1_000, random: () => 1 })).toBe(28);
  });

  it('with the default random source stays within [ceiling/2, ceiling] and is a whole number of ms', () => {
    for (let attempt = 1; attempt <= 12; attempt++) {
      const ceiling = Math.min(5_000, 100 * 2 ** (attempt - 1));
      for (let i = 0; i < 50; i++) {
        const delay = backoffDelay(attempt);
        expect(Number.isInteger(delay)).toBe(true);
        expect(delay).toBeGreaterThanOrEqual(ceiling / 2);
        expect(delay).toBeLessThanOrEqual(ceiling);
      }
    }
  });
});

describe('isRetryableDatabaseError', () => {
  it.each([
    ['40001', 'serialization_failure'],
    ['40P01', 'deadlock_detected'],
    ['55P03', 'lock_not_available'],
    ['57P01', 'admin_shutdown'],
    ['57P02', 'crash_shutdown'],
    ['57P03', 'cannot_connect_now'],
    ['53300', 'too_many_connections'],
    ['53400', 'configuration_limit_exceeded'],
    ['08000', 'connection_exception'],
    ['08003', 'connection_does_not_exist'],
    ['08006', 'connection_failure'],
    ['08P01', 'protocol_violation (class 08)'],
  ])('SQLSTATE %s (%s) is retried', (code) => {
    expect(isRetryableDatabaseError(withCode(code))).toBe(true);
  });

  it.each(['ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENOTFOUND', 'EAI_AGAIN'])(
    'socket error %s is retried',
    (code) => {
      expect(isRetryableDatabaseError(withCode(code))).toBe(true);
    },
  );

  it.each([
    ['28P01', 'invalid_password'],
    ['28000', 'invalid_authorization_specification'],
    ['3D000', 'invalid_catalog_name (no such database)'],
    ['42601', 'syntax_error'],
    ['42P01', 'undefined_table'],
    ['23505', 'unique_violation'],
    ['22012', 'division_by_zero'],
    ['57014', 'query_canceled'],
    ['EACCES', 'a socket error a retry cannot fix'],
  ])('%s (%s) surfaces at once', (code) => {
    expect(isRetryableDatabaseError(withCode(code))).toBe(false);
  });

  it('decides on the code when there is one, whatever the message says', () => {
    expect(isRetryableDatabaseError(withCode('42601', 'Connection terminated unexpectedly'))).toBe(false);
  });

  it.each([
    'Connection terminated unexpectedly',
    'Connection terminated due to connection timeout',
    'timeout expired: connection timeout',
    'Client has encountered a connection error and is not queryable',
    'Client was closed and is not queryable',
    'Connection ended',
    'CONNECTION TERMINATED',
  ])('node-postgres "%s" without a code is retried', (message) => {
    expect(isRetryableDatabaseError(new Error(message))).toBe(true);
  });

  it('a plain error without a code is not retried, nor is one whose code is not a string', () => {
    expect(isRetryableDatabaseError(new Error('boom'))).toBe(false);
    expect(isRetryableDatabaseError(withCode(40001, 'boom'))).toBe(false);
  });

  it.each([
    ['a string', 'Connection terminated unexpectedly'],
    ['an object with a retryable code', { code: '40001', message: 'Connection terminated' }],
    ['undefined', undefined],
    ['null', null],
  ])('what is not an Error (%s) is not retried', (_label, value) => {
    expect(isRetryableDatabaseError(value)).toBe(false);
  });
});
