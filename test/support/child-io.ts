/** Small helpers for tests that talk to a child process and its entrypoints. */
import { connect } from "node:net";

/** Read lines from a stream until one matches; returns that line. Rejects at EOF or after `timeoutMs`. */
export async function lineMatching(reader: ReadableStreamDefaultReader<Uint8Array>, re: RegExp, timeoutMs: number): Promise<string> {
  const decoder = new TextDecoder();
  let buffered = "";
  let seen = "";
  const timer = setTimeout(() => void reader.cancel(), timeoutMs);
  try {
    for (;;) {
      const lines = buffered.split("\n");
      buffered = lines.pop()!;
      const hit = lines.find((l) => re.test(l));
      if (hit) return hit;
      seen += lines.join("\n");
      const { value, done } = await reader.read();
      if (done) throw new Error(`No line matching ${re} within ${timeoutMs} ms; got: ${seen}${buffered}`);
      buffered += decoder.decode(value, { stream: true });
    }
  } finally {
    clearTimeout(timer);
  }
}

/** Send `payload` over TCP to 127.0.0.1:`port`, half-close, and resolve with everything received until EOF. */
export function tcpExchange(port: number, payload: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = connect({ host: "127.0.0.1", port });
    let got = "";
    s.on("data", (d) => (got += d.toString()));
    s.on("end", () => resolve(got));
    s.on("error", reject);
    s.end(payload);
  });
}

/** The JSON lines of a child's stdout, as they arrive (blank lines skipped). */
export async function* jsonLines<T = Record<string, unknown>>(stream: ReadableStream<Uint8Array>): AsyncGenerator<T> {
  const decoder = new TextDecoder();
  let buf = "";
  const reader = stream.getReader();
  for (let r = await reader.read(); !r.done; r = await reader.read()) {
    buf += decoder.decode(r.value, { stream: true });
    for (let i = buf.indexOf("\n"); i >= 0; i = buf.indexOf("\n")) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      if (line.trim()) yield JSON.parse(line) as T;
    }
  }
}
