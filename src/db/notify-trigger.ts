import { fitIdentifier, quoteIdentifier, quoteLiteral } from './identifiers.js';

/** The schema part of a qualified name such as `"public"."events"` (with its dot), or '' for an unqualified one. */
function schemaPrefix(qualifiedName: string): string {
  const match = /^((?:"(?:[^"]|"")*"|[^".]+)\.)?(?:"(?:[^"]|"")*"|[^".]+)$/.exec(qualifiedName.trim());
  if (!match) throw new Error(`not a (qualified) table name: ${qualifiedName}`);
  return match[1] ?? '';
}

/** Where a table's NOTIFY trigger goes and what it sends. */
export interface NotifyTarget {
  /** The table, already quoted and qualified (`"message_store"."messages"`). */
  tableQualified: string;
  /** Plain names, quoted here. */
  positionColumn: string;
  channel: string;
  triggerName: string;
  /** The trigger function, quoted and qualified; default `<triggerName>` in the table's schema. */
  functionQualified?: string;
  /**
   * The wake-up flag (a regclass literal of the runner's `projection_wake_flag` sequence): the trigger notifies only
   * while it reads 1, i.e. while the high-water leader sleeps (high-water/wake.ts). Without it the trigger notifies
   * on every insert (migration 5, and tables a caller attaches by hand).
   */
  wakeFlagLiteral?: string;
  /**
   * Where the flag is read: in the trigger's WHEN (the default, migration 12 on), or in the function's body, which
   * runs as its owner (migration 10, kept as released).
   */
  flagIn?: 'when' | 'body';
}

const flagInBody = (target: NotifyTarget) => target.wakeFlagLiteral !== undefined && target.flagIn === 'body';

function functionName(target: NotifyTarget): string {
  const { tableQualified, triggerName } = target;
  return target.functionQualified ?? `${schemaPrefix(tableQualified)}${quoteIdentifier(fitIdentifier(triggerName))}`;
}

/**
 * The trigger function's body (pg_proc.prosrc): `sources/prepare.ts` compares a foreign table's function with it to
 * bring an older one up to date.
 *
 * With a flag read in the WHEN, the function runs only while the flag says 1 (the leader sleeps): whenever events
 * flow a writer pays the WHEN's one read of a sequence's value, no function call, and its commit takes no notify
 * lock (notifyTriggerSql). Migration 10 read the flag first thing in the body instead (`flagIn: 'body'`), which cost
 * every INSERT statement a call of a SECURITY DEFINER function.
 */
export function notifyFunctionBody(target: NotifyTarget): string {
  const { positionColumn, channel, wakeFlagLiteral } = target;
  const flagCheck = flagInBody(target)
    ? `
        -- 1: the high-water leader sleeps and listens. Anything else: it follows the head, or no runner is running.
        IF pg_catalog.pg_sequence_last_value(${wakeFlagLiteral}::pg_catalog.regclass) IS DISTINCT FROM 1 THEN
          RETURN NULL;
        END IF;`
    : wakeFlagLiteral
      ? `
        -- Called only while the wake-up flag says 1 (the trigger's WHEN): the high-water leader sleeps and listens.`
      : '';
  return `
      DECLARE
        v_last text;
      BEGIN${flagCheck}
        SELECT max(i.${quoteIdentifier(positionColumn)})::text INTO v_last FROM inserted i;
        IF v_last IS NOT NULL
           AND coalesce(pg_catalog.current_setting('projection_runner.notify', true), '') <> 'off' THEN
          PERFORM pg_catalog.pg_notify(${quoteLiteral(channel)}, v_last);
        END IF;
        RETURN NULL;
      END
      `;
}

/**
 * The trigger function alone (CREATE OR REPLACE FUNCTION: no lock on the table, writers go on). With the flag read in
 * its body (migration 10) it runs as its owner (SECURITY DEFINER, search_path pinned to pg_catalog): the flag lives
 * in the runner's schema, which a foreign store's writers may not be allowed to use. Read in the WHEN, the flag needs
 * no schema privilege (the regclass literal is stored as the sequence's oid) and SELECT on it is granted to PUBLIC
 * (migration 12), and the function needs none: it runs as the writer.
 */
export function notifyFunctionSql(target: NotifyTarget): string {
  const security = flagInBody(target) ? ' SECURITY DEFINER SET search_path = pg_catalog, pg_temp' : '';
  return `
      CREATE OR REPLACE FUNCTION ${functionName(target)}() RETURNS trigger LANGUAGE plpgsql${security} AS $fn$${notifyFunctionBody(target)}$fn$;`;
}

/**
 * NOTIFY on commits that inserted rows into a table, whoever wrote them (the library, a plain INSERT, COPY, another
 * event store's own functions): a statement-level AFTER INSERT trigger with a transition table sends one
 * `pg_notify(channel, max(position))` per INSERT statement. NOTIFY is delivered on commit only and deduplicated per
 * transaction by (channel, payload), so a rolled-back insert sends nothing and a multi-row INSERT sends one
 * notification carrying its highest position. The payload is the position as text, as events_append sent it before.
 * With a wake-up flag it sends only while the flag says the runner sleeps: the trigger's WHEN reads it (see
 * notifyFunctionBody).
 *
 * - `triggerName`: a name longer than PostgreSQL's 63 bytes is fitted (fitIdentifier: cut, with a hash of the whole
 *   name) rather than cut silently, so that two long names stay apart (a cut `<table>_notify` met
 *   `<table>_next_position`, or another table's trigger function).
 *
 * Reading the transition table and pg_notify need no privilege; the WHEN reads the flag as the writer, by oid (no
 * schema privilege), and `migrate` grants SELECT on it to PUBLIC (migration 12). An INSERT that inserts no row sends
 * nothing.
 *
 * A transaction that sent a NOTIFY cannot be prepared (two-phase commit): such a writer opts out, per transaction,
 * with `SET LOCAL projection_runner.notify = 'off'` (the runner still finds its events by polling).
 *
 * Idempotent (CREATE OR REPLACE FUNCTION, DROP TRIGGER IF EXISTS, or CREATE OR REPLACE TRIGGER with `replace`): safe
 * to apply again to attach the same table.
 * On a partitioned table, create it on the parent (PostgreSQL refuses transition tables on a partition).
 */
export function notifyTriggerSql(target: NotifyTarget, { replace = false }: { replace?: boolean } = {}): string {
  const trigger = quoteIdentifier(fitIdentifier(target.triggerName));
  // PostgreSQL evaluates an AFTER trigger's WHEN as it queues the trigger (AfterTriggerSaveEvent → TriggerEnabled in
  // trigger.c), for a statement trigger at the end of the statement, after its rows were inserted: the writer holds
  // its transaction id when it reads the flag, which the proof of high-water/wake.ts rests on. A NULL (the flag never
  // set, or, on PostgreSQL 18, no SELECT on it) reads as "silent", as `IS DISTINCT FROM 1` did in the body.
  const when =
    target.wakeFlagLiteral && !flagInBody(target)
      ? `
        WHEN (pg_catalog.pg_sequence_last_value(${target.wakeFlagLiteral}::pg_catalog.regclass) = 1)`
      : '';
  // Replacing an existing trigger: CREATE OR REPLACE TRIGGER (PostgreSQL 14) takes the table's SHARE ROW EXCLUSIVE
  // lock, which readers pass; DROP TRIGGER would take ACCESS EXCLUSIVE, and a running daemon's batch that read events
  // and then waits for a runner table migrate has altered deadlocks with it.
  const create = replace
    ? 'CREATE OR REPLACE TRIGGER'
    : `DROP TRIGGER IF EXISTS ${trigger} ON ${target.tableQualified};
      CREATE TRIGGER`;
  return `${notifyFunctionSql(target)}
      ${create} ${trigger} AFTER INSERT ON ${target.tableQualified}
        REFERENCING NEW TABLE AS inserted
        FOR EACH STATEMENT${when} EXECUTE FUNCTION ${functionName(target)}();
  `;
}
