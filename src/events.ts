/**
 * The event types: what a writer appends and what a handler receives. They belong to the floor (with errors.ts,
 * which names StoredEvent in HandlerError): every room may import them, and they import nothing.
 */

export interface NewEvent {
  type: string;
  data: unknown;
  metadata?: Record<string, unknown>;
}

export interface StoredEvent {
  globalPosition: bigint;
  streamName: string;
  streamPosition: bigint;
  type: string;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- each handler reads the shape of its own event types
  data: any;
  metadata: Record<string, unknown>;
  recordedAt: Date;
  /** Set on an event that committed after its gap had been declared dead, delivered out of global order. */
  late?: boolean;
}
