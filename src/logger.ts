import pino, { type Logger } from 'pino';

/** Structured JSON logs on stdout, one line per event of interest. */
export function createLogger(level: string, name = 'projection-runner'): Logger {
  return pino({
    name,
    level,
    base: { pid: process.pid },
    timestamp: pino.stdTimeFunctions.isoTime,
    // Connection strings never reach a log line whole (the password is removed where one could appear).
    redact: { paths: ['connectionString', 'databaseUrl', '*.connectionString', '*.password', 'password'], censor: '***' },
  });
}

export type { Logger };
