/** iperf3 stream throughput: its client command line and its JSON report. */

/** What one iperf3 run measured (receiver side). */
export interface IperfResult {
  readonly gbitPerS: number;
  readonly bytes: number;
  readonly durationS: number;
}

/**
 * The iperf3 client's argv: one TCP stream to `host:port` for `seconds`, JSON output.
 * @example iperfClientArgs("127.0.0.1", 5201, 5)
 */
export function iperfClientArgs(host: string, port: number, seconds: number): string[] {
  return ["iperf3", "-c", host, "-p", String(port), "-t", String(seconds), "-J"];
}

/**
 * Parse `iperf3 -J` output.
 * @throws {Error} when iperf3 reported an error or the receiver summary is missing.
 */
export function parseIperfJson(text: string): IperfResult {
  const j = JSON.parse(text) as { error?: string; end?: { sum_received?: { bits_per_second?: number; bytes?: number; seconds?: number } } };
  if (j.error) throw new Error(`iperf3 failed: ${j.error}`);
  const r = j.end?.sum_received;
  if (!r || r.bits_per_second === undefined) throw new Error("iperf3 output has no end.sum_received");
  return { gbitPerS: r.bits_per_second / 1e9, bytes: r.bytes ?? 0, durationS: r.seconds ?? 0 };
}
