import { createRequire } from 'node:module';
import type { Logger } from 'pino';

/**
 * pino is loaded by the first createLogger, not with this module: a command that logs nothing (status with a
 * DATABASE_URL) saves its load, about 25 ms of CPU at start. pino is CommonJS, so it loads synchronously.
 */
const loadPino = () => createRequire(import.meta.url)('pino') as typeof import('pino').default;

/**
 * Logs for machines and for people: one JSON object per line (pino) for a collector, a readable line for a person at
 * a terminal. Both go to stderr, so that stdout stays a command's output. The readable form is a small pino
 * destination (`prettyLogLine`), not a transport: a line is written before the call that logged it returns, so a
 * command that exits right after logging loses nothing.
 */

export type LogFormat = 'json' | 'pretty';

export interface LoggerOptions {
  /** Undefined: pretty when stderr is a terminal, else json. */
  format?: LogFormat;
  name?: string;
  /** Where the lines go (default stderr); the demo prints them above its status line. */
  write?: (text: string) => void;
}

export function createLogger(level: string, options: LoggerOptions = {}): Logger {
  const terminal = process.stderr.isTTY === true;
  const format = options.format ?? (terminal ? 'pretty' : 'json');
  const write = options.write ?? ((text: string) => void process.stderr.write(text));
  const color = terminal && options.write === undefined;
  const destination = {
    write(chunk: string) {
      if (format === 'json') return write(chunk);
      for (const line of chunk.split('\n').filter(Boolean)) write(`${prettyLogLine(JSON.parse(line) as Record<string, unknown>, color)}\n`);
    },
  };
  const pino = loadPino();
  return pino(
    {
      name: options.name ?? 'projection-runner',
      level,
      base: { pid: process.pid },
      timestamp: pino.stdTimeFunctions.isoTime,
      // Connection strings never reach a log line whole (the password is removed where one could appear).
      redact: { paths: ['connectionString', 'databaseUrl', '*.connectionString', '*.password', 'password'], censor: '***' },
    },
    destination,
  );
}

const LEVELS: Record<number, { label: string; color: string }> = {
  10: { label: 'TRACE', color: '90' },
  20: { label: 'DEBUG', color: '36' },
  30: { label: 'INFO', color: '32' },
  40: { label: 'WARN', color: '33' },
  50: { label: 'ERROR', color: '31' },
  60: { label: 'FATAL', color: '35' },
};

/** Fields every line has, shown in the line's head or not at all. */
const HEAD = new Set(['level', 'time', 'pid', 'hostname', 'name', 'msg', 'component']);

/**
 * One pino record as a person reads it: `12:03:04.567 WARN  [high-water] gap timed out  gap=5..6 projection=balances`.
 * Pure, for the tests.
 */
export function prettyLogLine(record: Record<string, unknown>, color = false): string {
  const level = LEVELS[Number(record.level)] ?? { label: String(record.level), color: '0' };
  const time = typeof record.time === 'string' ? record.time.replace(/^.*T/, '').replace(/Z$/, '') : fieldText(record.time ?? '');
  const label = level.label.padEnd(5);
  const fields = Object.entries(record)
    .filter(([key]) => !HEAD.has(key))
    .map(([key, value]) => `${key}=${fieldText(value)}`);
  return [
    time,
    color ? `\u001b[${level.color}m${label}\u001b[0m` : label,
    ...(record.component ? [`[${text(record.component)}]`] : []),
    text(record.msg ?? ''),
    ...(fields.length > 0 ? [` ${fields.join(' ')}`] : []),
  ].join(' ');
}

const text = (value: unknown): string => (typeof value === 'string' ? value : fieldText(value));

function fieldText(value: unknown): string {
  if (typeof value === 'string') return /^[^\s"=]+$/.test(value) ? value : JSON.stringify(value);
  // pino's error serializer: the message is what a person needs on the line (the JSON form keeps the stack).
  if (value && typeof value === 'object' && 'message' in value && 'type' in value)
    return JSON.stringify((value as { message: unknown }).message);
  return JSON.stringify(value) ?? String(value);
}

export type { Logger };
