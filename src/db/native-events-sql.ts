import type { StoreNames } from './identifiers.js';
import type { NotifyTarget } from './notify-trigger.js';

/**
 * The native events table's SQL that migrations define in several versions: events_append (the library's writer) and
 * its parts, and the table's NOTIFY trigger target. Kept apart from the list of migrations (migrations.ts), which
 * calls these with the options each version had.
 */

/** events_append's name, signature and the variables every version of it declares (up to its own). */
export function appendSignatureSql(q: StoreNames['q']): string {
  return `${q.appendFunction}(
        p_stream text, p_types text[], p_data jsonb[], p_metadata jsonb[], p_expected bigint, p_channel text)
      RETURNS TABLE (first_position bigint, last_position bigint, stream_version bigint, actual_version bigint)
      LANGUAGE plpgsql AS $fn$
      DECLARE
        n         int := cardinality(p_types);
        v_version bigint;
        v_first   bigint;
        v_next    bigint;
        i         int;`;
}

/**
 * The start of events_append: queue behind the stream's other writers (until they commit), read the stream's
 * version into v_version, and return the actual version without writing when it is not the expected one.
 */
export function streamVersionCheckSql({ schema, table, q }: Pick<StoreNames, 'schema' | 'table' | 'q'>): string {
  return `-- Writers of one stream queue here until the holder commits; writers of other streams do not.
        PERFORM pg_advisory_xact_lock(hashtext('${schema}.${table}:stream'), hashtext(p_stream));

        SELECT coalesce(max(e.stream_position), 0) INTO v_version
          FROM ${q.events} e WHERE e.stream_name = p_stream;
        IF p_expected IS NOT NULL AND p_expected <> v_version THEN
          RETURN QUERY SELECT NULL::bigint, NULL::bigint, NULL::bigint, v_version;
          RETURN;
        END IF;`;
}

/**
 * The body of events_append's reservation: n consecutive values of the sequence into v_first, starting over when
 * another session's nextval() interleaves (the values skipped become holes, resolved like rollbacks).
 */
export function reservePositionsSql(q: StoreNames['q']): string {
  return `v_first := nextval(${q.sequenceLiteral});
          i := 1;
          WHILE i < n LOOP
            v_next := nextval(${q.sequenceLiteral});
            IF v_next = v_first + i THEN
              i := i + 1;
            ELSE
              v_first := v_next;
              i := 1;
            END IF;
          END LOOP;`;
}

/**
 * events_append: the library's writer (see store/event-store.ts). Migration 3 defined it sending its own NOTIFY;
 * migration 5 redefines it without, since the table's statement trigger notifies for every writer.
 */
export function appendFunctionSql({ schema, table, q }: StoreNames, { notify }: { notify: boolean }): string {
  const notifyStep = notify
    ? `-- Delivered on commit only; a rolled-back append notifies nobody.
        PERFORM pg_notify(p_channel, (v_first + n - 1)::text);`
    : `-- No NOTIFY here any more: the table's statement trigger sends it, for this INSERT as for anyone's.`;
  return `
      CREATE OR REPLACE FUNCTION ${appendSignatureSql(q)}
        k_lock    int := hashtext('${schema}.${table}:positions');
        v_locked  boolean := false;
      BEGIN
        ${streamVersionCheckSql({ schema, table, q })}

        -- An xid before any position (see ${table}_next_position).
        PERFORM pg_current_xact_id();

        -- Reserve n consecutive global positions. The session lock serialises only this reservation (microseconds),
        -- not the writers' transactions. Plain INSERTs that take nextval() without the lock can still interleave:
        -- then start the run again; the skipped values become holes that the runner resolves like rollbacks.
        -- PL/pgSQL checks for interrupts before every statement, so a cancel or statement_timeout can land between
        -- any two of them: the lock is taken and released inside the protected block, and the handler releases it
        -- if this session holds it, whichever statement the interrupt hit. v_locked (PL/pgSQL variables survive the
        -- block's rollback) makes the usual case a single cheap statement, so that a second interrupt has next to no
        -- time to land inside the handler; pg_locks answers for the instant between taking the lock and the flag.
        BEGIN
          PERFORM pg_advisory_lock(k_lock, 0);
          v_locked := true;
          ${reservePositionsSql(q)}
          v_locked := NOT pg_advisory_unlock(k_lock, 0);
        EXCEPTION WHEN OTHERS OR query_canceled THEN
          IF v_locked THEN
            PERFORM pg_advisory_unlock(k_lock, 0);
          ELSE
            PERFORM pg_advisory_unlock(k_lock, 0)
               FROM pg_locks l
              WHERE l.locktype = 'advisory' AND l.pid = pg_backend_pid() AND l.granted AND l.objsubid = 2
                AND l.classid::bigint = (k_lock::bigint + 4294967296) % 4294967296 AND l.objid = 0;
          END IF;
          RAISE;
        END;

        INSERT INTO ${q.events} (global_position, stream_name, stream_position, type, data, metadata)
        SELECT v_first + u.o - 1, p_stream, v_version + u.o, u.t, u.d, u.m
          FROM unnest(p_types, p_data, p_metadata) WITH ORDINALITY AS u(t, d, m, o);

        ${notifyStep}
        RETURN QUERY SELECT v_first, v_first + n - 1, v_version + n, v_version;
      END
      $fn$;
`;
}

/**
 * The native events table's NOTIFY trigger (migration 5), with the wake-up flag from migration 10 on (read in the
 * function's body), in the trigger's WHEN from migration 12 on.
 */
export function nativeNotifyTarget(names: StoreNames, wakeFlagLiteral?: string, flagIn?: 'when' | 'body'): NotifyTarget {
  return {
    tableQualified: names.q.events,
    positionColumn: 'global_position',
    channel: names.channel,
    triggerName: `${names.table}_notify`,
    wakeFlagLiteral,
    flagIn,
  };
}
