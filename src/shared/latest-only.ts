/**
 * Sends the latest of the values offered, one send at a time: the values offered while a send runs collapse into
 * the newest, sent once it ends. For a hint whose newest value makes the older ones moot (a NOTIFY of H): under load
 * it is sent once per round trip instead of once per offer, and never holds up whoever offers it.
 */
export class LatestOnly<T> {
  private pending: { value: T } | undefined;
  private sending: Promise<void> | undefined;

  constructor(
    private readonly send: (value: T) => Promise<void>,
    /** A failed send: told, never thrown (the next offer is sent as usual). */
    private readonly onError: (error: unknown) => void,
  ) {}

  offer(value: T): void {
    this.pending = { value };
    this.sending ??= this.drain();
  }

  /** Resolves once nothing is being sent or waits to be. */
  async idle(): Promise<void> {
    while (this.sending) await this.sending;
  }

  private async drain(): Promise<void> {
    try {
      while (this.pending) {
        const { value } = this.pending;
        this.pending = undefined;
        try {
          await this.send(value);
        } catch (error) {
          this.onError(error);
        }
      }
    } finally {
      this.sending = undefined;
    }
  }
}
