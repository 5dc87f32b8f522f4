/**
 * A live status line that stays the last line of a terminal, with log lines printed above it: each log line clears
 * the status line, takes its place and ends with a newline, and the status line is drawn again below it. Without a
 * terminal, statuses and log lines are plain lines in order.
 */
export class StatusLine {
  private current = '';

  constructor(private readonly out: NodeJS.WriteStream = process.stdout) {}

  private get tty(): boolean {
    return this.out.isTTY === true;
  }

  /** Replaces the status line (at a terminal, cut to the screen's width: a wrapped line could not be redrawn). */
  show(status: string): void {
    if (!this.tty) {
      this.out.write(`${status}\n`);
      return;
    }
    this.current = fitToWidth(status, this.out.columns);
    this.out.write(`\r\u001b[2K${this.current}`);
  }

  /** Prints `text` (one or more whole lines) above the status line. */
  above(text: string): void {
    const lines = text.endsWith('\n') ? text : `${text}\n`;
    if (!this.tty) {
      this.out.write(lines);
      return;
    }
    this.out.write(`\r\u001b[2K${lines}${this.current}`);
  }

  /** Leaves the status line where it is and goes to the next line (before the last messages of a stop). */
  end(): void {
    if (this.tty && this.current) this.out.write('\n');
    this.current = '';
  }
}

/** A line cut to `columns - 1` characters (the last column would wrap on some terminals), `…` where cut. Pure. */
export function fitToWidth(line: string, columns: number | undefined): string {
  if (!columns || columns < 2 || line.length < columns) return line;
  return `${line.slice(0, columns - 2)}…`;
}
