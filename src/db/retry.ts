import pRetry, { AbortError } from 'p-retry';
import type { Logger } from 'pino';

/**
 * Which database errors are worth retrying. Connection-level failures and transient server states are; errors that
 * a retry cannot fix (bad SQL, authentication, a missing database) are not and surface at once.
 */
const RETRYABLE_SQLSTATES = new Set([
  '40001', // serialization_failure
  '40P01', // deadlock_detected
  '55P03', // lock_not_available
  '57P01', // admin_shutdown (server restart)
  '57P02', // crash_shutdown
  '57P03', // cannot_connect_now (starting up / shutting down)
  '53300', // too_many_connections
  '53400', // configuration_limit_exceeded
]);

const RETRYABLE_NODE_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENOTFOUND', 'EAI_AGAIN']);

export function isRetryableDatabaseError(error: unknown): boolean {
  if (!(error instanceof Error)) return false;
  const code = (error as { code?: unknown }).code;
  if (typeof code === 'string') {
    if (RETRYABLE_SQLSTATES.has(code) || code.startsWith('08')) return true;
    if (RETRYABLE_NODE_CODES.has(code)) return true;
    return false;
  }
  // node-postgres reports a dropped connection without a code.
  return /Connection terminated|connection timeout|Client has encountered a connection error|not queryable|Connection ended/i.test(
    error.message,
  );
}

/** Capped exponential backoff with full jitter; attempt counts from 1. Pure, for tests and for loops that sleep. */
export function backoffDelay(attempt: number, { baseMs = 100, maxMs = 5_000, random = Math.random } = {}): number {
  const ceiling = Math.min(maxMs, baseMs * 2 ** Math.max(0, attempt - 1));
  return Math.round(ceiling / 2 + (random() * ceiling) / 2);
}

/** The db_errors_total counter, as far as retries need it (a prom-client Counter fits). */
export interface ErrorCounter {
  inc(labels: { operation: string }): void;
}

export interface RetryOptions {
  /** Names the operation in the db_errors metric (its `operation` label) and in the log line. */
  operation: string;
  /** What failed, for the log line: "<failed>; retrying". */
  failed: string;
  log: Pick<Logger, 'warn'>;
  errors: ErrorCounter;
  signal?: AbortSignal;
  /** Which errors are the database's to retry; default isRetryableDatabaseError. */
  isRetryable?: (error: unknown) => boolean;
}

/**
 * Runs `fn` until it succeeds, retrying retryable database errors for as long as `signal` is not aborted (the
 * daemon must ride out a database restart), with backoff; every retried failure is counted and logged here, once.
 */
export function withRetries<T>(fn: () => Promise<T>, options: RetryOptions): Promise<T> {
  const isRetryable = options.isRetryable ?? isRetryableDatabaseError;
  return pRetry(
    async () => {
      if (options.signal?.aborted) throw new AbortError('stopping');
      return fn();
    },
    {
      retries: Number.POSITIVE_INFINITY,
      factor: 2,
      minTimeout: 100,
      maxTimeout: 5_000,
      randomize: true,
      signal: options.signal,
      shouldRetry: ({ error }) => isRetryable(error) && !options.signal?.aborted,
      onFailedAttempt: ({ error, attemptNumber }) => {
        if (!isRetryable(error)) return;
        options.errors.inc({ operation: options.operation });
        options.log.warn({ err: error, attempt: attemptNumber }, `${options.failed}; retrying`);
      },
    },
  );
}
