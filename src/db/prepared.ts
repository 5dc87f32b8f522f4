import { createHash } from 'node:crypto';
import type pg from 'pg';
import { ConnectionLostError } from '../errors.js';

/**
 * Server-side prepared statements run from the simple protocol: `PREPARE` once per session, `EXECUTE` after, in a
 * multi-statement string with what goes around them (BEGIN before, COMMIT after), so that a statement is neither
 * planned every time nor given a round trip of its own. node-pg prepares only through the extended protocol, one
 * statement per round trip.
 *
 * Why it matters: a batch's context statement reads projection_gaps, whose partial indexes make planning dearer than
 * running it; pgbench, 17 sessions on 2 cores: 4,950 transactions/s planned each time, 19,100/s prepared.
 *
 * A statement's name comes from a hash of its text, so a changed text is a new statement. Which sessions prepared
 * which statements is known here, per client object (a new connection is a new client). A session that lost them (a
 * DEALLOCATE ALL, a pooler handing out another server session) fails with 26000: the client is given up as broken
 * (ConnectionLostError: the pool discards it, the batch is retried on another).
 */

const preparedOn = new WeakMap<pg.ClientBase, Set<string>>();

export interface PreparedStatement {
  name: string;
  /** The PREPARE statement (parameter types are given by casts in the text). */
  prepare: string;
}

export function preparedStatement(text: string): PreparedStatement {
  const name = `pr_${createHash('sha256').update(text).digest('hex').slice(0, 20)}`;
  return { name, prepare: `PREPARE ${name} AS ${text}` };
}

/**
 * Runs `before`, EXECUTE of `statement` with `args` (SQL literals, inlined: the simple protocol takes no
 * parameters), then `after`, in one round trip; returns the EXECUTE's result. `alsoPrepare`: statements that later
 * round trips of the same session will EXECUTE, prepared here too (a PREPARE inside a transaction that then fails
 * would abort it; before BEGIN it cannot).
 *
 * PREPARE is not undone by a rollback: when this round trip fails after its PREPAREs ran, the next one's PREPARE
 * fails with 42P05 as the first statement, before anything else ran; they are then known prepared and it runs again.
 */
export async function executePrepared(
  client: pg.ClientBase,
  statement: PreparedStatement,
  args: string[],
  around: { before?: string; after?: string; alsoPrepare?: PreparedStatement[] } = {},
): Promise<pg.QueryResult> {
  for (let attempt = 1; ; attempt++) {
    const done = preparedOn.get(client) ?? new Set<string>();
    const fresh = [statement, ...(around.alsoPrepare ?? [])].filter((s) => !done.has(s.name));
    const parts = [...fresh.map((s) => s.prepare), around.before, `EXECUTE ${statement.name}(${args.join(', ')})`, around.after];
    try {
      const result = await client.query(parts.filter((p) => p !== undefined).join(';\n'));
      for (const s of fresh) done.add(s.name);
      preparedOn.set(client, done);
      const results = Array.isArray(result) ? (result as pg.QueryResult[]) : [result];
      return results[results.length - 1 - (around.after === undefined ? 0 : 1)]!;
    } catch (error) {
      const code = (error as { code?: string }).code;
      if (code === '42P05' && fresh.length > 0 && attempt === 1) {
        for (const s of fresh) done.add(s.name);
        preparedOn.set(client, done);
        continue;
      }
      const lost = lostStatements(client, error);
      if (lost) throw lost;
      throw error;
    }
  }
}

/** Whether `client`'s session has prepared every one of `statements` (then prepareOn has nothing to do). */
export function preparedAll(client: pg.ClientBase, statements: readonly PreparedStatement[]): boolean {
  const done = preparedOn.get(client);
  return done !== undefined && statements.every((s) => done.has(s.name));
}

/**
 * PREPAREs on `client` whichever of `statements` its session has not prepared yet (a round trip each, once per
 * session), outside any transaction (so that a later round trip inside one never needs a PREPARE: one failing there would abort it).
 */
export async function prepareOn(client: pg.ClientBase, statements: readonly PreparedStatement[]): Promise<void> {
  const done = preparedOn.get(client) ?? new Set<string>();
  preparedOn.set(client, done);
  for (const s of statements.filter((s) => !done.has(s.name))) {
    try {
      await client.query(s.prepare);
    } catch (error) {
      // Prepared already by a round trip that failed after its PREPARE had run (see executePrepared).
      if ((error as { code?: string }).code !== '42P05') throw error;
    }
    done.add(s.name);
  }
}

/**
 * A session that lost its prepared statements (26000: a DEALLOCATE ALL, a pooler handing out another server session)
 * is given up as broken: ConnectionLostError (the pool discards it), and nothing is known prepared on it any more.
 * Undefined for any other error. For round trips that EXECUTE outside executePrepared (a batch's lazily sent BEGIN).
 */
export function lostStatements(client: pg.ClientBase, error: unknown): ConnectionLostError | undefined {
  if ((error as { code?: string } | undefined)?.code !== '26000') return undefined;
  preparedOn.delete(client);
  return new ConnectionLostError(error);
}
