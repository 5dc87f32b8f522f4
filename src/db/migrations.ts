import { quoteLiteral, type StoreNames } from './identifiers.js';
import { notifyFunctionSql, notifyTriggerSql } from './notify-trigger.js';
import { sourceKey } from './runner-schema.js';
import {
  appendFunctionSql,
  appendSignatureSql,
  nativeNotifyTarget,
  reservePositionsSql,
  streamVersionCheckSql,
} from './native-events-sql.js';

/**
 * Numbered migrations, applied in order, each in the transaction of `migrate()`. Never edit a released one: add the
 * next number. They are functions of the configured names because schema, table and channel are settings.
 *
 * Each has up to two parts: `events`, the native events table (its sequence, events_append, the NOTIFY trigger),
 * and `runner`, the runner's own tables. A native database gets both, events first (exactly what it always got); a
 * foreign source (message-db, Emmett, custom) gets the runner part only — its table belongs to another store.
 */
export interface Migration {
  version: number;
  name: string;
  events?: (names: StoreNames) => string;
  runner?: (names: StoreNames) => string;
}

/** A migration's SQL for a source: both parts for the native one, the runner's for a foreign one. */
export function migrationSql(migration: Migration, names: StoreNames): string {
  const parts = names.source.kind === 'native' ? [migration.events, migration.runner] : [migration.runner];
  return parts.map((part) => part?.(names) ?? '').join('\n');
}

/** The columns an operator request (replay, retry, skip) goes through, from the CLI's row to the owner's outcome. */
const REQUEST_LIFECYCLE_COLUMNS = `status       text        NOT NULL CHECK (status IN ('pending', 'running', 'done', 'failed')),
        requested_by text,
        requested_at timestamptz NOT NULL DEFAULT now(),
        started_at   timestamptz,
        finished_at  timestamptz,`;

export const migrations: Migration[] = [
  {
    version: 1,
    name: 'events',
    events: ({ schema, table, q }) => `
      CREATE SCHEMA IF NOT EXISTS ${q.schema};

      -- CACHE 1: values are handed out in order across sessions, which both the gap reasoning and the consecutive
      -- reservation below rely on (a per-session cache hands out interleaved blocks).
      CREATE SEQUENCE ${q.sequence} CACHE 1;

      CREATE TABLE ${q.events} (
        global_position bigint PRIMARY KEY DEFAULT nextval(${q.sequenceLiteral}),
        stream_name     text        NOT NULL,
        stream_position bigint      NOT NULL,
        type            text        NOT NULL,
        data            jsonb       NOT NULL,
        metadata        jsonb       NOT NULL DEFAULT '{}',
        recorded_at     timestamptz NOT NULL DEFAULT now(),
        UNIQUE (stream_name, stream_position)
      );
      ALTER SEQUENCE ${q.sequence} OWNED BY ${q.events}.global_position;

      -- One round trip per append, also inside a caller's transaction. Returns actual_version with NULL positions
      -- when the expected version does not match, without raising, so a caller's transaction is not aborted.
      CREATE FUNCTION ${appendSignatureSql(q)}
      BEGIN
        ${streamVersionCheckSql({ schema, table, q })}

        -- Reserve n consecutive global positions. The session lock serialises only this reservation (microseconds),
        -- not the writers' transactions. Plain INSERTs that take nextval() without the lock can still interleave:
        -- then start the run again; the skipped values become holes that the runner resolves like rollbacks.
        PERFORM pg_advisory_lock(hashtext('${schema}.${table}:positions'), 0);
        BEGIN
          ${reservePositionsSql(q)}
        EXCEPTION WHEN OTHERS OR query_canceled THEN
          -- A session lock outlives the transaction: never leave it behind on a cancel or error.
          PERFORM pg_advisory_unlock(hashtext('${schema}.${table}:positions'), 0);
          RAISE;
        END;
        PERFORM pg_advisory_unlock(hashtext('${schema}.${table}:positions'), 0);

        INSERT INTO ${q.events} (global_position, stream_name, stream_position, type, data, metadata)
        SELECT v_first + u.o - 1, p_stream, v_version + u.o, u.t, u.d, u.m
          FROM unnest(p_types, p_data, p_metadata) WITH ORDINALITY AS u(t, d, m, o);

        -- Delivered on commit only; a rolled-back append notifies nobody.
        PERFORM pg_notify(p_channel, (v_first + n - 1)::text);
        RETURN QUERY SELECT v_first, v_first + n - 1, v_version + n, v_version;
      END
      $fn$;
    `,
  },
  {
    version: 2,
    name: 'runner',
    runner: ({ q }) => `
      CREATE TABLE ${q.checkpoints} (
        name         text PRIMARY KEY,
        position     bigint      NOT NULL DEFAULT 0,
        state        text        NOT NULL DEFAULT 'stopped',
        last_error   jsonb,
        -- id of the last 'late' row of projection_gaps this projection has dealt with
        late_seen_id bigint      NOT NULL DEFAULT 0,
        owner        text,
        updated_at   timestamptz NOT NULL DEFAULT now()
      );

      CREATE TABLE ${q.gaps} (
        id            bigserial PRIMARY KEY,
        from_position bigint      NOT NULL,
        to_position   bigint      NOT NULL,
        first_seen_at timestamptz NOT NULL,
        resolved_at   timestamptz,
        resolution    text CHECK (resolution IN ('filled', 'timed_out', 'dead', 'late')),
        CHECK (from_position <= to_position)
      );
      CREATE INDEX ON ${q.gaps} (id) WHERE resolved_at IS NULL;
      CREATE INDEX ON ${q.gaps} (resolved_at) WHERE resolution IN ('timed_out', 'dead');
      CREATE INDEX ON ${q.gaps} (id) WHERE resolution = 'late';

      CREATE TABLE ${q.highWater} (
        singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
        position   bigint      NOT NULL DEFAULT 0,
        head       bigint      NOT NULL DEFAULT 0,
        head_recorded_at timestamptz,
        leader     text,
        updated_at timestamptz NOT NULL DEFAULT now()
      );
      INSERT INTO ${q.highWater} DEFAULT VALUES;

      -- Events at positions of dead gaps that a projection applied, so that a later 'late' notice for the same
      -- position is not applied twice.
      CREATE TABLE ${q.lateDeliveries} (
        projection text   NOT NULL,
        position   bigint NOT NULL,
        applied_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (projection, position)
      );

      CREATE TABLE ${q.replays} (
        id           bigserial PRIMARY KEY,
        projection   text        NOT NULL,
        ${REQUEST_LIFECYCLE_COLUMNS}
        target       bigint,
        applied      bigint      NOT NULL DEFAULT 0,
        error        text
      );
      -- The database refuses a second replay of the same projection while one is pending or running.
      CREATE UNIQUE INDEX ON ${q.replays} (projection) WHERE status IN ('pending', 'running');
    `,
  },
  {
    version: 3,
    name: 'settled gaps, skipped positions, cancel-safe append',
    events: (names) => `
      -- Every position is taken by a transaction that already has an xid: the proof that settles a given-up gap
      -- (high-water.ts) compares xids with a snapshot's xmin, and a writer without an xid yet would be invisible to it.
      -- CASE evaluates its condition first, so the xid is assigned before nextval() runs.
      CREATE FUNCTION ${names.q.nextPositionFunction}() RETURNS bigint LANGUAGE sql VOLATILE AS $fn$
        SELECT CASE WHEN pg_current_xact_id() IS NOT NULL THEN nextval(${names.q.sequenceLiteral}) END
      $fn$;
      ALTER TABLE ${names.q.events} ALTER COLUMN global_position SET DEFAULT ${names.q.nextPositionFunction}();

      ${appendFunctionSql(names, { notify: true })}
    `,
    runner: (names) => `
      -- A given-up gap is watched until settled (proven unfillable), never forgotten on a timer. fence_xid: the xid
      -- the proof waits for (see high-water.ts).
      ALTER TABLE ${names.q.gaps} ADD COLUMN fence_xid bigint, ADD COLUMN settled_at timestamptz;
      CREATE INDEX ON ${names.q.gaps} (id) WHERE resolution IN ('timed_out', 'dead') AND settled_at IS NULL;
      CREATE INDEX ON ${names.q.gaps} (from_position) WHERE resolution IN ('timed_out', 'dead');
      CREATE INDEX ON ${names.q.gaps} (from_position) WHERE resolution = 'late';

      -- Positions of given-up gaps that a projection passed without reading them (they were missing then): exactly
      -- the positions for which a late notice must be applied to it. projection_late_deliveries now records the
      -- late applications, so that each happens once.
      CREATE TABLE ${names.q.skippedPositions} (
        projection    text   NOT NULL,
        from_position bigint NOT NULL,
        to_position   bigint NOT NULL,
        PRIMARY KEY (projection, from_position),
        CHECK (from_position <= to_position)
      );
      -- Carried over: pending late notices the earlier rule would still have applied (passed, not yet delivered).
      INSERT INTO ${names.q.skippedPositions} (projection, from_position, to_position)
      SELECT DISTINCT c.name, g.from_position, g.from_position
        FROM ${names.q.checkpoints} c JOIN ${names.q.gaps} g
          ON g.resolution = 'late' AND g.id > c.late_seen_id AND g.from_position <= c.position
       WHERE NOT EXISTS (SELECT 1 FROM ${names.q.lateDeliveries} d WHERE d.projection = c.name AND d.position = g.from_position)
      ON CONFLICT DO NOTHING;
    `,
  },
  {
    version: 4,
    name: 'dead letters and operator commands',
    // Used by projector/dead-letters.ts (the error policy and the retry/skip commands).
    runner: ({ q }) => `
    CREATE TABLE ${q.deadLetters} (
      id              bigserial PRIMARY KEY,
      projection      text        NOT NULL,
      global_position bigint      NOT NULL,
      stream_name     text        NOT NULL,
      stream_position bigint      NOT NULL,
      type            text        NOT NULL,
      data            jsonb       NOT NULL,
      metadata        jsonb       NOT NULL DEFAULT '{}',
      recorded_at     timestamptz NOT NULL,
      late            boolean     NOT NULL DEFAULT false,
      error           text        NOT NULL,
      attempts        int         NOT NULL,
      -- 'policy' (onError: skip) or 'command' (projection-runner skip)
      reason          text        NOT NULL CHECK (reason IN ('policy', 'command')),
      dead_lettered_by text,
      dead_lettered_at timestamptz NOT NULL DEFAULT now(),
      -- Set in the transaction of the handler's writes when the event is re-delivered: at most once.
      redelivered_at  timestamptz,
      last_redelivery_error text
    );
    -- One pending dead letter per event and projection (an event dead-lettered again after a replay updates it).
    CREATE UNIQUE INDEX ON ${q.deadLetters} (projection, global_position) WHERE redelivered_at IS NULL;

    CREATE TABLE ${q.commands} (
      id           bigserial PRIMARY KEY,
      projection   text        NOT NULL,
      command      text        NOT NULL CHECK (command IN ('retry', 'skip')),
      dead_letters boolean     NOT NULL DEFAULT false,
      -- skip: the failed position the requester saw; the owner refuses to skip any other event
      position     bigint,
      ${REQUEST_LIFECYCLE_COLUMNS}
      result       jsonb,
      error        text
    );
    CREATE INDEX ON ${q.commands} (projection) WHERE status = 'pending';
  `,
  },
  {
    version: 5,
    name: 'notify on every insert',
    // Every writer wakes the runner, not only events_append: a statement trigger sends the NOTIFY (one per INSERT
    // statement, its highest position), and events_append stops sending its own (one mechanism, same payload).
    // A foreign table gets its trigger from migrate's attach step instead (src/sources/prepare.ts).
    events: (names) => `
      ${notifyTriggerSql(nativeNotifyTarget(names))}

      ${appendFunctionSql(names, { notify: false })}
    `,
  },
  {
    version: 6,
    name: 'versioned read models',
    // Blue/green rebuilds (src/versions/). A build is one version of a projection's read model with a checkpoint row of
    // its own (its `slot`): the first build keeps the projection's name and its tables where setup created them; a
    // later one is named name@vN and built in schema name_vN. One build is live (what the application reads through
    // the views in projection_read_views), at most one is building, the others are kept until dropped.
    runner: ({ q }) => `
    CREATE TABLE ${q.builds} (
      slot         text PRIMARY KEY,
      projection   text        NOT NULL,
      version      int         NOT NULL CHECK (version >= 1),
      -- the module version whose code builds it (differs from version after a rebuild of the same code)
      code_version int         NOT NULL CHECK (code_version >= 1),
      -- NULL: in place (the first build: its tables where setup created them); else the build's own schema
      schema_name  text,
      role         text        NOT NULL CHECK (role IN ('live', 'building', 'kept')),
      switch_mode  text        NOT NULL CHECK (switch_mode IN ('auto', 'manual')),
      -- H when the build was started: the progress target
      target       bigint      NOT NULL DEFAULT 0,
      created_at   timestamptz NOT NULL DEFAULT now(),
      switched_at  timestamptz,
      -- why the last switch attempt could not happen (a name taken in the read schema, a lock not granted)
      switch_error text,
      -- a build in place: the relations its setup creates (what a switch away from it moves into a schema of its own)
      relations    text[],
      UNIQUE (projection, version)
    );
    CREATE UNIQUE INDEX ON ${q.builds} (projection) WHERE role = 'live';
    CREATE UNIQUE INDEX ON ${q.builds} (projection) WHERE role = 'building';

    CREATE TABLE ${q.readViews} (
      read_schema text NOT NULL,
      view_name   text NOT NULL,
      projection  text NOT NULL,
      PRIMARY KEY (read_schema, view_name)
    );
  `,
  },
  {
    version: 7,
    name: 'housekeeping through indexes',
    // Housekeeping (src/high-water/housekeeping.ts) audits each settled gap a bounded number of times and prunes
    // the history through indexes, in chunks. CREATE INDEX (not CONCURRENTLY: migrate runs in one transaction) on a
    // store with a long history blocks writes to these runner tables for as long as it builds; events are not touched.
    runner: ({ q }) => `
    -- audits: how many times the audit has looked inside this settled gap; next_audit_at: when it looks again
    -- (NULL: not settled yet, or its scheduled audits are done and only the one before pruning is left).
    ALTER TABLE ${q.gaps} ADD COLUMN audits int NOT NULL DEFAULT 0, ADD COLUMN next_audit_at timestamptz;
    UPDATE ${q.gaps} SET next_audit_at = now() WHERE resolution IN ('timed_out', 'dead') AND settled_at IS NOT NULL;
    CREATE INDEX ON ${q.gaps} (next_audit_at) WHERE next_audit_at IS NOT NULL;
    -- Pruning: settled gaps and filled ones by age, and what hangs off a gap by position.
    CREATE INDEX ON ${q.gaps} (settled_at) WHERE resolution IN ('timed_out', 'dead') AND settled_at IS NOT NULL;
    CREATE INDEX ON ${q.gaps} (resolved_at) WHERE resolution = 'filled';
    CREATE INDEX ON ${q.skippedPositions} (from_position);
    CREATE INDEX ON ${q.lateDeliveries} (position);
    -- The given-up ranges above a checkpoint (every batch context): found by their end, not by walking every
    -- given-up gap below the checkpoint.
    CREATE INDEX ON ${q.gaps} (to_position) WHERE resolution IN ('timed_out', 'dead');
    `,
  },
  {
    version: 8,
    name: 'one event table per runner schema; dead letters keep any JSON',
    // The table this runner schema serves (db/runner-schema.ts): migrate refuses any other. Dead letters' data and
    // metadata as json, not jsonb: an event of a json column may hold the escape \u0000, which jsonb refuses (22P05),
    // and a dead letter that cannot be written would stop its projection for ever.
    runner: (names) => `
    ALTER TABLE ${names.q.highWater} ADD COLUMN source text;
    UPDATE ${names.q.highWater} SET source = ${quoteLiteral(sourceKey(names))};
    ALTER TABLE ${names.q.deadLetters}
      ALTER COLUMN metadata DROP DEFAULT,
      ALTER COLUMN data TYPE json USING data::json,
      ALTER COLUMN metadata TYPE json USING metadata::json,
      ALTER COLUMN metadata SET DEFAULT '{}';
  `,
  },
  {
    version: 9,
    name: 'version schemas the runner created',
    // A build's schema is the runner's only when the runner created it (a plain CREATE SCHEMA in the transaction that
    // records the build, or in the switch that moves the first build's relations): its oid is kept here, so `drop`
    // removes a schema only when it is that very schema, never an application's schema of the same name. Builds
    // recorded before this column have none: `drop` leaves their schema in place and says so.
    runner: ({ q }) => `
    ALTER TABLE ${q.builds} ADD COLUMN schema_oid oid;
  `,
  },
  {
    version: 10,
    name: 'writers notify only while the runner sleeps',
    // The wake-up protocol (src/high-water/wake.ts): the flag the leader sets and the trigger reads. A sequence, so
    // that both happen outside any transaction (a row would be read as of a writer's snapshot). Created at 0: no
    // runner sleeping, writers send nothing; an older daemon still running during the upgrade wakes on its poll.
    // A foreign table's trigger function is brought up to date by migrate's attach step (src/sources/prepare.ts).
    // The leader sets it through a function that runs as its owner, so that the runner's role needs no new grant
    // (an upgrade keeps the grants it had); whoever may call it can change only how soon the runner wakes.
    runner: ({ q }) => `
      CREATE SEQUENCE ${q.wakeFlag} MINVALUE 0 MAXVALUE 1 START 0 NO CYCLE;
      CREATE FUNCTION ${q.setWakeFlag}(p_notify boolean) RETURNS bigint
        LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
        AS $fn$ SELECT pg_catalog.setval(${q.wakeFlagLiteral}, CASE WHEN p_notify THEN 1 ELSE 0 END) $fn$;
    `,
    events: (names) => notifyFunctionSql(nativeNotifyTarget(names, names.q.wakeFlagLiteral, 'body')),
  },
  {
    version: 11,
    name: 'event types on checkpoints',
    // The projection's event-type filter beside its checkpoint (NULL: every type), written when its projector starts:
    // a waiter in another process (src/wait/) credits a projection with the events it does not take.
    runner: (names) => `ALTER TABLE ${names.q.checkpoints} ADD COLUMN event_types text[];`,
  },
  {
    version: 12,
    name: 'the wake-up flag read in the trigger WHEN',
    // Migration 10's trigger called its function (SECURITY DEFINER, search_path set, a transition table) for every
    // INSERT statement only to find the flag at 0: a fifth of the CPU of a one-event INSERT. Read in the trigger's
    // WHEN, the flag costs a writer one read of a sequence while the runner follows (db/notify-trigger.ts). The writer
    // reads it as itself: SELECT on the 0/1 flag for everyone (harmless; no schema privilege is needed, the WHEN
    // holds the sequence's oid). Replacing the trigger takes the events table's SHARE ROW EXCLUSIVE lock for a moment
    // (CREATE OR REPLACE TRIGGER: readers pass it; writers wait for it as for migration 5's).
    // A foreign table's trigger is brought up to date by migrate's attach step (src/sources/prepare.ts).
    runner: ({ q }) => `GRANT SELECT ON ${q.wakeFlag} TO PUBLIC;`,
    events: (names) => notifyTriggerSql(nativeNotifyTarget(names, names.q.wakeFlagLiteral), { replace: true }),
  },
  {
    version: 13,
    name: 'the daemons know when a wait is pending',
    // Read your own writes (src/wait/): a waiter records the highest position it waits for, with a time to live it
    // renews while its waits are pending, and notifies the daemons; their projectors then write the checkpoint moves a
    // wait needs instead of leaving them in memory, and notify the waiters when a checkpoint moves. The position only
    // grows while it lives (concurrent waiters of several processes: the row lock orders them); once it has expired,
    // the next waiter starts it again. Unlogged: lost in a crash, it is only a hint (the waiter writes it again).
    // Through functions that run as their owner, like the wake-up flag: the runner's role and the application's need
    // no grant, and an upgrade keeps the grants it had.
    runner: ({ q }) => `
      CREATE UNLOGGED TABLE ${q.waits} (
        id       boolean PRIMARY KEY DEFAULT true CHECK (id),
        position bigint NOT NULL,
        until    timestamptz NOT NULL
      );
      CREATE FUNCTION ${q.raiseWaited}(p_position bigint, p_ttl_ms int, p_channel text) RETURNS bigint
        LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
        AS $fn$
          WITH raised AS (
            INSERT INTO ${q.waits} AS w (id, position, until)
            VALUES (true, p_position, clock_timestamp() + p_ttl_ms * interval '1 millisecond')
            ON CONFLICT (id) DO UPDATE
              SET position = CASE WHEN w.until < clock_timestamp() THEN excluded.position
                                  ELSE greatest(w.position, excluded.position) END,
                  until = greatest(w.until, excluded.until)
              WHERE w.until < clock_timestamp() OR w.position < excluded.position OR w.until < excluded.until
            RETURNING position
          )
          SELECT position FROM raised, LATERAL (SELECT pg_notify(p_channel, position::text)) n
        $fn$;
      CREATE FUNCTION ${q.waited}() RETURNS text
        LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
        AS $fn$
          SELECT position || '/' || (extract(epoch FROM until - clock_timestamp()) * 1000)::int8
            FROM ${q.waits} WHERE until > clock_timestamp()
        $fn$;
    `,
  },
];
