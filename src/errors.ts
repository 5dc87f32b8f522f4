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
  constructor(readonly setting: string, message: string) {
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
  constructor(readonly file: string, message: string, options?: { cause?: unknown }) {
    super(`projection ${file}: ${message}`, options);
  }
}

/** A command named a projection that is not registered. */
export class UnknownProjectionError extends ProjectionRunnerError {
  constructor(readonly projection: string, known: string[]) {
    super(`unknown projection "${projection}" (known: ${known.join(', ') || 'none'})`);
  }
}

/** A replay of this projection is already pending or running. */
export class ReplayInProgressError extends ProjectionRunnerError {
  constructor(readonly projection: string) {
    super(`a replay of "${projection}" is already in progress; wait for it to finish (see \`projection-runner status\`)`);
  }
}

/** The checkpoint moved under us: another instance owns the projection now. */
export class OwnershipLostError extends ProjectionRunnerError {
  constructor(readonly projection: string) {
    super(`projection "${projection}" is owned by another instance (checkpoint compare-and-set failed)`);
  }
}
