import type { StoredEvent } from './events.js';

/**
 * Every error a user may want to catch or search for. Each has a stable `name` and a message that says what to do
 * next; database errors are never wrapped into these (they surface as pg's own DatabaseError).
 */

export class ProjectionRunnerError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** A setting (flag, environment variable or option) has an invalid value. `setting` names it. */
export class ConfigError extends ProjectionRunnerError {
  constructor(
    readonly setting: string,
    message: string,
  ) {
    super(`invalid ${setting}: ${message}`);
  }
}

/** An append was refused before anything was written: bad stream name, empty batch, unserialisable data… */
export class InvalidAppendError extends ProjectionRunnerError {}

/** The stream's version was not the one the caller expected; nothing was written. */
export class WrongExpectedVersionError extends ProjectionRunnerError {
  constructor(
    readonly stream: string,
    readonly expected: bigint,
    readonly actual: bigint,
  ) {
    super(`stream "${stream}" is at version ${actual}, expected ${expected}: reload the stream and decide again`);
  }
}

/** A projection module could not be loaded or is not a valid projection. */
export class ProjectionLoadError extends ProjectionRunnerError {
  constructor(
    readonly file: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(`projection ${file}: ${message}`, options);
  }
}

/** A command named a projection that is not registered. */
export class UnknownProjectionError extends ProjectionRunnerError {
  constructor(
    readonly projection: string,
    known: string[],
  ) {
    super(`unknown projection "${projection}" (known: ${known.join(', ') || 'none'})`);
  }
}

/** A replay ended `failed` (its handler kept failing while rebuilding, or its reset failed); `reason` says why. */
export class ReplayFailedError extends ProjectionRunnerError {
  constructor(
    readonly projection: string,
    readonly reason: string,
  ) {
    super(`replay of "${projection}" failed: ${reason}`);
  }
}

/** A replay of this projection is already pending or running. */
export class ReplayInProgressError extends ProjectionRunnerError {
  constructor(readonly projection: string) {
    super(`a replay of "${projection}" is already in progress; wait for it to finish (see \`projection-runner status\`)`);
  }
}

/**
 * The build (version) a projector runs changed under it: switched away from (kept), superseded, dropped, or moved
 * (its tables into a schema of their own, then made to build again). The projector stops before its handler writes;
 * the runner starts the build again from the database's record if it is still one to run.
 */
export class BuildRetiredError extends ProjectionRunnerError {
  constructor(
    readonly slot: string,
    readonly now: { role: string; schema: string | null } | undefined,
  ) {
    super(
      `"${slot}" ${now ? `is ${now.role}${now.schema ? ` in schema ${now.schema}` : ''} now` : 'was dropped'}: this projector stops before writing anything`,
    );
  }
}

/** `rebuild`, `switch` or `drop` was refused before anything changed; the message says why and what to do. */
export class VersionRequestError extends ProjectionRunnerError {
  constructor(
    readonly projection: string,
    reason: string,
  ) {
    super(`${projection}: ${reason}`);
  }
}

/**
 * A switch could not give the application the new version under a name: a relation of that name exists in the read
 * schema and is not a view the runner made, nor a table of the build being switched away from. Nothing changed.
 */
export class ReadNameTakenError extends ProjectionRunnerError {
  constructor(
    readonly projection: string,
    readonly relation: string,
  ) {
    super(
      `cannot switch "${projection}": ${relation} exists and does not belong to it; rename or drop it, the switch is tried again after the next batch`,
    );
  }
}

/**
 * A switch would give transactions whose snapshot predates the new version's data (REPEATABLE READ or SERIALIZABLE
 * ones, their snapshot taken before the switch, the read names not read yet) the new version's tables, which that
 * snapshot sees empty or partly built: postponed until they end. `sessions`: their pids and when their transaction
 * began (null: hidden from a role without pg_read_all_stats).
 */
export class OldSnapshotsError extends ProjectionRunnerError {
  constructor(
    readonly projection: string,
    readonly sessions: Array<{ pid: number; since: string | null }>,
  ) {
    const listed = sessions
      .slice(0, 5)
      .map((s) => `pid ${s.pid}${s.since ? ` since ${s.since}` : ''}`)
      .join(', ');
    super(
      `cannot switch "${projection}" yet: ${sessions.length} transaction(s) hold a snapshot older than the new version's data (${listed}${sessions.length > 5 ? ', …' : ''}), in which the new version's tables would look empty; the switch is tried again after the next batch`,
    );
  }
}

/**
 * A version's schema exists and the runner did not create it (an application's schema of the same name): the runner
 * never builds into a schema it did not create, nor moves a first version's relations into one. Nothing changed.
 */
export class VersionSchemaTakenError extends ProjectionRunnerError {
  constructor(
    readonly projection: string,
    readonly schema: string,
    purpose: string,
  ) {
    super(
      `cannot build "${projection}": schema "${schema}" (${purpose}) exists and was not created by the runner; rename or drop that schema, or give the module a version whose schema is free (nothing was changed)`,
    );
  }
}

/**
 * `drop --version N` would delete objects outside the version's schema that depend on it (an application's view, a
 * foreign key): refused, listing them, unless the operator names the cascade (`--cascade`). Nothing changed.
 */
export class VersionDependentsError extends ProjectionRunnerError {
  constructor(
    readonly projection: string,
    readonly schema: string,
    readonly dependents: string[],
  ) {
    super(
      `${projection}: objects outside schema "${schema}" depend on it and would be dropped with it: ${dependents.join('; ')}; drop or change them first, or pass --cascade to drop them too (nothing was changed)`,
    );
  }
}

/** The checkpoint moved under us: another instance owns the projection now. */
export class OwnershipLostError extends ProjectionRunnerError {
  constructor(readonly projection: string) {
    super(`projection "${projection}" is owned by another instance (checkpoint compare-and-set failed)`);
  }
}

/**
 * What a handler threw, as text, whatever it threw: an Error, a string, undefined, or an object without a prototype
 * (whose String() conversion itself throws). The error path must never fail on a badly behaved handler.
 */
export function describeThrown(thrown: unknown): string {
  return storable(describe(thrown));
}

/**
 * Text PostgreSQL can store, in a text or a jsonb column: no NUL (text refuses the byte, jsonb the escape \u0000) and no
 * lone surrogate (a NUL is written as the visible escape \u0000, a lone surrogate as U+FFFD). A handler's message with either made every write of its failure fail,
 * and the failure path retried it for ever: the projection never reached `failed` nor went past the event.
 */
export function storable(text: string): string {
  return text.replaceAll('\u0000', '\\u0000').replace(LONE_SURROGATE, '\uFFFD');
}

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g;

function describe(thrown: unknown): string {
  if (thrown instanceof Error) return thrown.message || thrown.name;
  if (typeof thrown === 'string') return thrown;
  try {
    const json = JSON.stringify(thrown);
    if (json !== undefined && json !== '{}') return json;
  } catch {
    // circular or BigInt: fall through
  }
  try {
    return String(thrown);
  } catch {
    return Object.prototype.toString.call(thrown);
  }
}

/**
 * A projection's handler failed on `event`: it threw, or it returned with the transaction aborted. Always a handler
 * fault (counted, retried --handler-retries times, then the error policy), whatever the cause's code or message.
 */
export class HandlerError extends ProjectionRunnerError {
  constructor(
    readonly event: StoredEvent,
    cause: unknown,
  ) {
    super(`handler failed at position ${event.globalPosition} (${event.type}): ${describeThrown(cause)}`, { cause });
  }

  /** The cause as text, for logs, the checkpoint row and dead letters. */
  get reason(): string {
    return describeThrown(this.cause);
  }
}

/** The handler returned, but the transaction it was given is aborted: the runner cannot write the checkpoint. */
export class HandlerLeftTransactionAbortedError extends ProjectionRunnerError {
  constructor() {
    super('the handler left the transaction aborted: it swallowed a database error without a savepoint (use one, or rethrow)');
  }
}

/**
 * A handler sent a statement on its batch's transaction after the batch had ended (a promise nobody awaited, such as
 * `events.forEach(async …)`): refused, since the batch has committed without it; the read model lacks that write.
 */
export class StatementAfterBatchError extends ProjectionRunnerError {
  constructor(readonly projection: string) {
    super(
      `"${projection}": a statement was sent on a batch's transaction after the batch had ended (a handler's promise not awaited?): refused, and what it would have written is not in the read model`,
    );
  }
}

/** handleBatch failed on a batch as a whole but on none of its events alone (e.g. a multi-row upsert meeting a key twice). */
export class BatchFailedAsWholeError extends ProjectionRunnerError {
  constructor(
    readonly size: number,
    cause: unknown,
  ) {
    super(`handleBatch failed on the batch of ${size} events as a whole but on none of them alone: ${describeThrown(cause)}`, { cause });
  }
}

/** The database connection of a batch broke (the client is no longer usable): a database fault, retried. */
export class ConnectionLostError extends ProjectionRunnerError {
  constructor(cause: unknown) {
    super(`the database connection broke during the batch: ${describeThrown(cause)}`, { cause });
  }
}

/** `skip` or `retry` asked of a projection that is not in the state the command needs. */
export class ProjectionNotFailedError extends ProjectionRunnerError {
  constructor(
    readonly projection: string,
    state: string,
  ) {
    super(`projection "${projection}" is not failed (state ${state}): nothing to skip`);
  }
}

/** A `retry`/`skip` command reached its projection but could not be carried out; the message says why. */
export class CommandFailedError extends ProjectionRunnerError {}

/**
 * An operator request (replay, retry, skip, rebuild, switch) that nothing can serve: refused before anything
 * changed, or withdrawn because nobody took it up within --request-timeout. The message says why and what to do.
 */
export class RequestNotServedError extends ProjectionRunnerError {}

/** An operator command stopped by a signal while it followed its request; the message says what became of it. */
export class RequestInterruptedError extends ProjectionRunnerError {
  constructor(
    readonly signal: string,
    outcome: string,
  ) {
    super(`interrupted (${signal}): ${outcome}`);
  }
}

/** The database could not be used: unreachable, or refused our credentials. Names host/port, never the password. */
export class DatabaseUnavailableError extends ProjectionRunnerError {}

/** The command line was fine but unusable as given (e.g. no terminal to confirm on): exit code 2. */
export class UsageError extends ProjectionRunnerError {}

/** The high-water row names another leader: this instance's write is rolled back and it stands down. */
export class NotLeaderError extends ProjectionRunnerError {
  constructor() {
    super('another instance leads the high-water tracker now');
  }
}

/** A projection waited for (ProjectionWaiter, `/wait`, `projection-runner wait`) is failed at or below the position. */
export class ProjectionFailedError extends ProjectionRunnerError {
  constructor(
    readonly projection: string,
    /** The position it is stopped at (undefined when its failure record has none). */
    readonly position: bigint | undefined,
    readonly eventType: string | undefined,
    readonly reason: string,
  ) {
    super(
      `projection "${projection}" is failed at position ${position ?? '?'}${eventType ? ` (${eventType})` : ''}: ${reason}; it will not get further until an operator runs \`projection-runner retry ${projection}\` or \`skip ${projection}\``,
    );
  }
}

/** A wait for a position ran out of time; `behind` names each projection still short of it, and why. */
export class WaitTimeoutError extends ProjectionRunnerError {
  constructor(
    readonly position: bigint,
    readonly timeoutMs: number,
    readonly behind: ReadonlyArray<{ projection: string; position: bigint; state: string; owner: string | null; reason: string }>,
  ) {
    super(
      `position ${position} not applied within ${timeoutMs} ms: ${behind
        .map((b) => `${b.projection} at ${b.position} (${b.state}${b.owner ? `, owned by ${b.owner}` : ''}): ${b.reason}`)
        .join('; ')}`,
    );
  }
}
