/**
 * Writes that respect backpressure on a Bun socket, for the bench's own load client and echo backend: what the kernel
 * does not take now is queued and written, in order, on `drain`.
 */
import type { Socket } from "bun";

/** A socket's queue of bytes the kernel did not take yet, in order. */
export interface PendingWrites {
  pending: Uint8Array[];
}

/** Write `bytes` now, or queue them behind what is already waiting. `copy` when the caller reuses the buffer. */
export function writeOrQueue<T extends PendingWrites>(s: Socket<T>, bytes: Uint8Array, copy = false): void {
  const c = s.data;
  if (c.pending.length > 0) {
    c.pending.push(copy ? new Uint8Array(bytes) : bytes);
    return;
  }
  const n = s.write(bytes);
  if (n < bytes.length) {
    const rest = bytes.subarray(Math.max(0, n));
    c.pending.push(copy ? new Uint8Array(rest) : rest);
  }
}

/** The socket's `drain` handler: write what is queued until the kernel stops taking it. */
export function flushPending<T extends PendingWrites>(s: Socket<T>): void {
  const c = s.data;
  while (c.pending.length > 0) {
    const chunk = c.pending[0]!;
    const n = s.write(chunk);
    if (n >= chunk.length) {
      c.pending.shift();
      continue;
    }
    c.pending[0] = chunk.subarray(Math.max(0, n));
    return;
  }
}
