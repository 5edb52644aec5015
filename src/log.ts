/**
 * Structured logging: one JSON object per line on stdout (`{"time","level","msg",...fields}`),
 * filtered by level. `rateLimited` keeps a repeating problem (a failing watch, refused sources)
 * to one line per interval with a count of what was suppressed.
 */
export type LogLevel = "debug" | "info" | "warn" | "error";
export type LogFields = Readonly<Record<string, unknown>>;

export interface Logger {
  debug(msg: string, fields?: LogFields): void;
  info(msg: string, fields?: LogFields): void;
  warn(msg: string, fields?: LogFields): void;
  error(msg: string, fields?: LogFields): void;
}

const order: Record<LogLevel, number> = { debug: 0, info: 1, warn: 2, error: 3 };

/** Write one line to stdout (the default sink of loggers and the access log). */
export const writeStdout = (line: string): void => console.log(line);

/** A logger writing JSON lines through `write` (default: stdout). */
export function createLogger(level: LogLevel = "info", write: (line: string) => void = writeStdout): Logger {
  const at = (lvl: LogLevel) => (msg: string, fields?: LogFields) => {
    if (order[lvl] < order[level]) return;
    write(JSON.stringify({ time: new Date().toISOString(), level: lvl, msg, ...fields }));
  };
  return { debug: at("debug"), info: at("info"), warn: at("warn"), error: at("error") };
}

/** A logger that drops everything (tests, benchmarks). */
export const silentLogger: Logger = { debug() {}, info() {}, warn() {}, error() {} };

/**
 * Log at most once per `intervalMs` per key; the next line carries `suppressed: N`.
 * @example const warnOnce = rateLimited(log.warn, 10_000); warnOnce("watch:services", "Watch failed", { error });
 */
export function rateLimited(
  log: (msg: string, fields?: LogFields) => void,
  intervalMs: number,
  now: () => number = Date.now,
): (key: string, msg: string, fields?: LogFields) => void {
  const last = new Map<string, { at: number; suppressed: number }>();
  return (key, msg, fields) => {
    const t = now();
    const entry = last.get(key);
    if (entry && t - entry.at < intervalMs) {
      entry.suppressed++;
      return;
    }
    log(msg, entry?.suppressed ? { ...fields, suppressed: entry.suppressed } : fields);
    last.set(key, { at: t, suppressed: 0 });
  };
}
