/**
 * The file descriptor reserve: listeners are refused with EMFILE (the limit, the reserve and what to do) once
 * binding would eat into the descriptors kept for health, admin and the API watch; descriptors are counted at
 * most once per `recountMs`; a raised limit or closed descriptors let binds through at the next count; an
 * EMFILE from the runtime gets the numbers too; and the listener manager reports it per listener, stays ready
 * with what bound, and binds the rest on retry once there is room.
 */
import { describe, expect, test } from "bun:test";
import { bindErrorMessage, FILE_LIMIT_ADVICE } from "../../src/listeners/bind-queue.ts";
import { DEFAULT_FILE_RESERVE, FileReserve, fileReserveAt } from "../../src/listeners/file-reserve.ts";
import { createTcpProxy } from "../../src/proxy/tcp/index.ts";
import { rt } from "../../src/runtime/index.ts";
import type { FileLimit, TcpListener } from "../../src/runtime/types.ts";
import { entrypoint, snapshot } from "../support/entrypoints.ts";
import { listenerManager } from "../support/listeners.ts";
import { freePort } from "../support/ports.ts";
import { canConnect } from "../support/tcp-peers.ts";

/** A process as the reserve sees it: `open` descriptors under `limit`, a clock the test moves; `counts` how often it was counted. */
function fakeProcess(open: number, soft: number) {
  const p = {
    open,
    limit: { soft, hard: soft } as FileLimit,
    time: 0,
    counts: 0,
    openFiles: () => (p.counts++, p.open),
    fileLimit: () => p.limit,
    now: () => p.time,
  };
  return p;
}

/** Take until refused (at most `max`); the number taken and the error. */
function takeAll(files: FileReserve, max = 10_000): { taken: number; error: unknown } {
  for (let taken = 0; taken < max; taken++) {
    try {
      files.take();
    } catch (error) {
      return { taken, error };
    }
  }
  return { taken: max, error: undefined };
}

describe("FileReserve", () => {
  test("the reserve is the configured one, at most a quarter of the soft limit", () => {
    expect(fileReserveAt({ soft: 1_048_576, hard: 1_048_576 })).toBe(DEFAULT_FILE_RESERVE);
    expect(fileReserveAt({ soft: 300, hard: 300 })).toBe(75);
    expect(fileReserveAt({ soft: 300, hard: 300 }, 10)).toBe(10);
    expect(fileReserveAt({ soft: 300, hard: 300 }, 0)).toBe(0);
  });

  test("listeners are taken until open + taken reaches limit - reserve; then EMFILE with the limit, the reserve and what to do", () => {
    const p = fakeProcess(100, 1_000);
    const files = new FileReserve({ ...p, reserve: 200 });
    const { taken, error } = takeAll(files);
    expect(taken).toBe(1_000 - 200 - 100);
    expect(error).toMatchObject({ code: "EMFILE", errno: 24, limit: 1_000, reserve: 200 });
    expect(bindErrorMessage(`Cannot bind listener "ns/web:http"`, "127.0.0.1", 30080, error)).toBe(
      `Cannot bind listener "ns/web:http" on 127.0.0.1:30080: too many open files (EMFILE: the limit is 1000, of which 200 are kept for health, admin and the API watch): ${FILE_LIMIT_ADVICE}`,
    );
    expect(FILE_LIMIT_ADVICE).toContain("raise the nofile limit");
    expect(FILE_LIMIT_ADVICE).toContain("--nodeport-addresses");
    // One count for all of that: taking is a decrement, a refusal within recountMs is free.
    expect(p.counts).toBe(1);
    expect(takeAll(files).taken).toBe(0);
    expect(p.counts).toBe(1);
  });

  test("counted again after recountMs: closed descriptors and a raised limit make room", () => {
    const p = fakeProcess(100, 400);
    const files = new FileReserve({ ...p, recountMs: 1_000 });
    expect(takeAll(files).taken).toBe(400 - 100 - 100); // reserve: a quarter of 400
    p.open = 300; // what was taken is open now
    p.time = 999;
    expect(takeAll(files).taken).toBe(0);
    p.time = 1_000;
    p.limit = { soft: 4_000, hard: 4_000 }; // `prlimit --pid` from outside
    expect(takeAll(files).taken).toBe(4_000 - 256 - 300);
    expect(files.state).toEqual({ open: 300, limit: { soft: 4_000, hard: 4_000 }, reserve: 256 });
  });

  test("the estimate runs down between counts even when descriptors are also opened elsewhere", () => {
    const p = fakeProcess(0, 1_000);
    const files = new FileReserve({ ...p, reserve: 0, recountMs: 1_000 });
    expect(takeAll(files, 500).taken).toBe(500);
    p.open = 900; // 500 listeners and 400 connections
    p.time = 1_000;
    expect(takeAll(files).taken).toBe(100);
  });

  test("unknown count or limit (not Linux, no permission): never refuses", () => {
    const files = new FileReserve({ openFiles: () => undefined, fileLimit: () => ({ soft: 10, hard: 10 }) });
    expect(takeAll(files, 1_000).taken).toBe(1_000);
    const noLimit = new FileReserve({ openFiles: () => 5, fileLimit: () => undefined });
    expect(takeAll(noLimit, 1_000).taken).toBe(1_000);
  });

  test("explain: the runtime's EMFILE gets the numbers and the next take counts again; other errors pass unchanged", () => {
    const p = fakeProcess(10, 1_000);
    const files = new FileReserve({ ...p, reserve: 100 });
    files.take();
    const err = files.explain(Object.assign(new Error("Failed to listen at 127.0.0.1"), { code: "EMFILE" }));
    expect(err).toMatchObject({ code: "EMFILE", limit: 1_000, reserve: 100 });
    const inUse = Object.assign(new Error("in use"), { code: "EADDRINUSE" });
    expect(files.explain(inUse)).toBe(inUse);
    expect(inUse).not.toHaveProperty("limit");
    const counted = p.counts;
    files.take();
    expect(p.counts).toBe(counted + 1);
  });

  test("guard (TCP) throws, guardAsync (UDP) rejects, and neither calls the bind when refused", async () => {
    const p = fakeProcess(0, 4);
    const files = new FileReserve({ ...p, reserve: 1 }); // room for 3
    let binds = 0;
    const listen = files.guard(() => ++binds);
    const bindUdp = files.guardAsync(async () => ++binds);
    expect(listen()).toBe(1);
    expect(await bindUdp()).toBe(2);
    expect(listen()).toBe(3);
    expect(() => listen()).toThrow("File descriptor reserve reached");
    await expect(bindUdp()).rejects.toMatchObject({ code: "EMFILE" });
    expect(binds).toBe(3);
    const failing = files.guardAsync(async () => Promise.reject(Object.assign(new Error("bind EMFILE"), { code: "EMFILE" })));
    p.time = 10_000;
    p.open = 0;
    await expect(failing()).rejects.toMatchObject({ code: "EMFILE", limit: 4, reserve: 1 });
  });
});

describe("ListenerManager with a file reserve", () => {
  test("listeners past the reserve fail with EMFILE; the bound ones serve; a retry binds the rest once there is room", async () => {
    const ports: number[] = [];
    for (let i = 0; i < 6; i++) ports.push(await freePort());
    // 100 descriptors open besides the listeners, a limit the test sets: room for 4 listeners.
    const p = { soft: 100 + 4 + 10 };
    const bound: TcpListener[] = [];
    const files = new FileReserve({ openFiles: () => 100 + bound.length, fileLimit: () => ({ soft: p.soft, hard: p.soft }), reserve: 10, recountMs: 0 });
    await using m = listenerManager(
      { http: createTcpProxy, tcp: createTcpProxy },
      { fileReserve: files, retryIntervalMs: 0, drainGraceMs: 0, listenTcp: (o) => (bound.push(rt.listenTcp(o)), bound.at(-1)!) },
    );
    m.apply(snapshot(...ports.map((port, i) => entrypoint({ name: `fd/s${i}:tcp`, port, endpoints: [1] }))));
    await m.settled();
    expect(m.counts()).toMatchObject({ bound: 4, failed: 2 });
    const states = m.status().flatMap((e) => e.listeners);
    for (const port of ports.slice(0, 4)) expect(await canConnect(port)).toBe(true);
    expect(states.filter((l) => !l.bound).map((l) => l.error)).toEqual(
      ports.slice(4).map((port, i) =>
        `Cannot bind listener "fd/s${i + 4}:tcp" on 127.0.0.1:${port}: too many open files (EMFILE: the limit is ${p.soft}, of which 10 are kept for health, admin and the API watch): ${FILE_LIMIT_ADVICE}`,
      ),
    );
    p.soft += 2;
    m.retryFailed();
    expect(m.counts()).toMatchObject({ bound: 6, failed: 0 });
    for (const port of ports) expect(await canConnect(port)).toBe(true);
  });
});
