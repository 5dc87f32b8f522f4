/**
 * What a terminal shows for the bytes written to it, enough for a status line: `\r` back to the start of the line,
 * `\n` to the next, `ESC[2K` clears the line, colours ignored, other characters written over what is there.
 */
export function screenOf(output: string): string[] {
  const lines: string[] = [''];
  let column = 0;
  for (let i = 0; i < output.length; i++) {
    const c = output[i]!;
    if (c === '\u001b') {
      // eslint-disable-next-line no-control-regex -- escape sequences are what it reads
      const sequence = /^\u001b\[[0-9;]*[A-Za-z]/.exec(output.slice(i))?.[0] ?? c;
      if (sequence === '\u001b[2K') lines[lines.length - 1] = '';
      i += sequence.length - 1;
    } else if (c === '\r') column = 0;
    else if (c === '\n') {
      lines.push('');
      column = 0;
    } else {
      const line = lines[lines.length - 1]!.padEnd(column);
      lines[lines.length - 1] = line.slice(0, column) + c + line.slice(column + 1);
      column++;
    }
  }
  return lines;
}
