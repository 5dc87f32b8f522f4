import { describe, expect, it } from 'vitest';
import { nextBatchSize } from '../../src/projector/batch.js';
import { backoffDelay, isRetryableDatabaseError } from '../../src/db/retry.js';

describe('adaptive batch size', () => {
  it.each([
    ['grows while full batches are fast', 500, true, 40, 1000],
    ['never beyond 10x the configured size', 5000, true, 40, 5000],
    ['holds when full batches take a while', 2000, true, 600, 2000],
    ['halves when a full batch is slow, never below the configured size', 4000, true, 1500, 2000],
    ['halves but not below the configured size', 600, true, 1500, 500],
    ['back to the configured size once caught up', 4000, false, 10, 500],
  ])('%s', (_label, current, full, ms, expected) => {
    expect(nextBatchSize(current as number, 500, full as boolean, ms as number)).toBe(expected);
  });
});

describe('retries', () => {
  it('backs off exponentially with jitter, capped', () => {
    expect(backoffDelay(1, { random: () => 0 })).toBe(50);
    expect(backoffDelay(1, { random: () => 1 })).toBe(100);
    expect(backoffDelay(4, { random: () => 1 })).toBe(800);
    expect(backoffDelay(30, { random: () => 1 })).toBe(5_000);
  });

  it.each([
    ['serialization failure', { code: '40001' }, true],
    ['server restart', { code: '57P01' }, true],
    ['connection exception class', { code: '08006' }, true],
    ['connection refused', { code: 'ECONNREFUSED' }, true],
    ['authentication failed', { code: '28P01' }, false],
    ['syntax error', { code: '42601' }, false],
  ])('%s is retryable: %s', (_label, fields, retryable) => {
    expect(isRetryableDatabaseError(Object.assign(new Error('x'), fields))).toBe(retryable);
  });

  it('treats a dropped connection without a code as retryable', () => {
    expect(isRetryableDatabaseError(new Error('Connection terminated unexpectedly'))).toBe(true);
    expect(isRetryableDatabaseError(new Error('boom'))).toBe(false);
  });
});
