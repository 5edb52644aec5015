/**
 * The node's succession (`control-plane/succession.ts`) over real Unix sockets: each test on an abstract name of its
 * own, and a socket file whose holder was killed. No sleeps: every step awaits what the other side did.
 */
import { describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { handoverSocket, printable, Succession, type SuccessionStatus } from "../../src/control-plane/succession.ts";
import type { TcpSocket } from "../../src/runtime/types.ts";
import { rt } from "../../src/runtime/index.ts";
import { lineMatching } from "../support/child-io.ts";
import { captureLog } from "../support/kube-sinks.ts";
import { waitFor } from "../support/wait.ts";

const { listenUnix, connectUnix } = rt;
if (!listenUnix || !connectUnix) throw new Error("These tests need a runtime with Unix sockets (Bun)");
const net = { listenUnix, connectUnix };

/** An abstract socket name no other test (or gateway) uses. */
const uniqueName = () => `\0kubegate-test-${crypto.randomUUID()}`;

/** A Succession for the fake process `pid` (version `v<pid>`). */
const member = (path: string, pid: number, log = captureLog().log) => Succession.start({ path, net, pid, version: `v${pid}`, log });

/** A process on the hand-over socket that is not a kubegate: it records what it receives and sends what it is told. */
async function rawPeer(path: string) {
  let received = "";
  const closed = Promise.withResolvers<void>();
  const sock: TcpSocket<null> = await net.connectUnix<null>(
    path,
    {
      data: (_s, chunk) => void (received += new TextDecoder().decode(chunk)),
      end: (s) => s.end(),
      close: () => closed.resolve(),
    },
    null,
  );
  return {
    get received() {
      return received;
    },
    send: (text: string) => sock.write(new TextEncoder().encode(text)),
    closed: closed.promise,
    [Symbol.dispose]: () => sock.terminate(),
  };
}

describe("handoverSocket", () => {
  test.each([
    ["auto", 0, undefined],
    ["auto", 10356, "\0kubegate-handover-10356"],
    ["none", 10356, undefined],
    ["none", 0, undefined],
    ["@x", 10356, "\0x"],
    ["@x", 0, "\0x"],
    ["/run/kubegate/handover.sock", 10356, "/run/kubegate/handover.sock"],
  ] as const)("%p with health port %p is %p", (setting, port, expected) => {
    expect(handoverSocket(setting, port)).toBe(expected);
  });

  test("printable names an abstract socket as `ss` does", () => {
    expect([printable("\0kubegate-handover-10356"), printable("/run/kubegate/handover.sock")]).toEqual(["@kubegate-handover-10356", "/run/kubegate/handover.sock"]);
  });
});

describe("Succession", () => {
  test("the first holds the socket; the second follows as a successor, starting until it announces ready; onChange on hello, ready and leave", async () => {
    const path = uniqueName();
    await using a = await member(path, 101);
    const changes: SuccessionStatus["successors"][] = [];
    a.onChange(() => changes.push(a.status().successors));
    expect(a.incumbent).toBe(true);
    expect(a.status()).toEqual({ role: "incumbent", successors: [] });
    expect([a.successorStarting(), a.successorReady(), a.peerServes()]).toEqual([false, false, false]);

    const b = await member(path, 102);
    expect(b.incumbent).toBe(false);
    expect(b.peerServes()).toBe(true); // its incumbent lives
    await waitFor(() => changes.length === 1, { what: "the successor's hello" });
    expect(changes).toEqual([[{ pid: 102, version: "v102", ready: false }]]);
    expect([a.successorStarting(), a.successorReady(), a.peerServes()]).toEqual([true, false, false]);
    await waitFor(() => b.status().incumbent?.pid === 101, { what: "the incumbent's hello" });
    expect(b.status()).toEqual({ role: "successor", incumbent: { pid: 101, version: "v101", ready: false }, successors: [] });

    b.announceReady();
    b.announceReady(); // said twice: one change
    await waitFor(() => changes.length === 2, { what: "the successor's ready" });
    expect(changes[1]).toEqual([{ pid: 102, version: "v102", ready: true }]);
    expect([a.successorStarting(), a.successorReady(), a.peerServes()]).toEqual([false, true, true]);
    expect(a.status()).toEqual({ role: "incumbent", successors: [{ pid: 102, version: "v102", ready: true }] });

    await b[Symbol.asyncDispose]();
    await waitFor(() => changes.length === 3, { what: "the successor to leave" });
    expect(changes).toEqual([
      [{ pid: 102, version: "v102", ready: false }],
      [{ pid: 102, version: "v102", ready: true }],
      [],
    ]);
    expect([a.incumbent, b.incumbent, b.peerServes(), a.peerServes()]).toEqual([true, false, false, false]);
  });

  test("disposing the incumbent makes its successor the incumbent: onIncumbent is called, and the next gateway follows it", async () => {
    const path = uniqueName();
    const a = await member(path, 101);
    await using b = await member(path, 102);
    const tookOver = Promise.withResolvers<void>();
    b.onIncumbent(() => tookOver.resolve());
    b.announceReady();
    await waitFor(() => a.successorReady(), { what: "the successor to be ready" });
    await a[Symbol.asyncDispose]();
    await tookOver.promise;
    expect(b.incumbent).toBe(true);
    expect(b.peerServes()).toBe(false); // nobody else serves the node now
    expect(b.status()).toEqual({ role: "incumbent", successors: [] });

    await using c = await member(path, 103);
    expect(c.incumbent).toBe(false);
    await waitFor(() => b.successorStarting(), { what: "the next successor to reach the new incumbent" });
    await waitFor(() => c.status().incumbent?.pid === 102, { what: "the new incumbent's hello" });
  });

  test("a chain of three: when the incumbent goes, exactly one successor takes the socket and the other follows it, ready as it announced before", async () => {
    const path = uniqueName();
    const a = await member(path, 101);
    await using b = await member(path, 102);
    await using c = await member(path, 103);
    const tookOver: Succession[] = [];
    const first = Promise.withResolvers<Succession>();
    for (const s of [b, c]) {
      s.onIncumbent(() => {
        tookOver.push(s);
        first.resolve(s);
      });
      s.announceReady();
    }
    await waitFor(() => a.status().successors.filter((p) => p.ready).length === 2, { what: "both successors to be ready" });
    await a[Symbol.asyncDispose]();

    const winner = await first.promise;
    const other = winner === b ? c : b;
    const [winnerPid, otherPid] = winner === b ? [102, 103] : [103, 102];
    // The other found the socket taken and connected to the winner; it said ready again on the new connection.
    await waitFor(() => other.status().incumbent?.pid === winnerPid, { what: "the other successor to follow the winner" });
    await waitFor(() => winner.successorReady(), { what: "the follower's ready to reach the winner" });
    expect(winner.status()).toEqual({ role: "incumbent", successors: [{ pid: otherPid, version: `v${otherPid}`, ready: true }] });
    expect(other.status()).toEqual({ role: "successor", incumbent: { pid: winnerPid, version: `v${winnerPid}`, ready: false }, successors: [] });
    expect([winner.incumbent, other.incumbent, other.peerServes(), winner.peerServes(), winner.successorStarting()]).toEqual([true, false, true, true, false]);
    expect(tookOver).toEqual([winner]);
  });

  test.each([
    ["a line that is not JSON", "hello there\n"],
    ["a line over 4096 bytes without its end", "x".repeat(5_000)],
    ["a valid line, then one over 4096 bytes", `{"type":"hello","pid":7,"version":"x"}\n${"y".repeat(5_000)}`],
  ])("a peer that sends %s is cut; the incumbent keeps working", async (_what, garbage) => {
    const path = uniqueName();
    const { lines, log } = captureLog();
    await using a = await member(path, 101, log);
    const changes: SuccessionStatus["successors"][] = [];
    a.onChange(() => changes.push(a.status().successors));
    {
      using peer = await rawPeer(path);
      await waitFor(() => peer.received.endsWith("\n"), { what: "the incumbent's hello" });
      expect(JSON.parse(peer.received)).toEqual({ type: "hello", pid: 101, version: "v101" });
      expect(peer.send(garbage)).toBe(garbage.length);
      await peer.closed;
    }
    await waitFor(() => a.status().successors.length === 0, { what: "the peer to be forgotten" });
    expect(lines.filter((l) => l.startsWith("warn: Hand-over socket: a peer that does not speak the protocol; closing it"))).toHaveLength(1);
    expect(changes.at(-1)).toEqual([]);

    await using b = await member(path, 102);
    b.announceReady();
    await waitFor(() => a.successorReady(), { what: "a real successor to be ready" });
    expect(a.status()).toEqual({ role: "incumbent", successors: [{ pid: 102, version: "v102", ready: true }] });
  });

  test("a peer that sends a whole line over 4096 bytes is cut, even when it parses", async () => {
    const path = uniqueName();
    await using a = await member(path, 101);
    using peer = await rawPeer(path);
    let closed = false;
    void peer.closed.then(() => (closed = true));
    expect(peer.send(`{"type":"hello","pid":7,"version":"${"v".repeat(5_000)}"}\n`)).toBeGreaterThan(5_000);
    await waitFor(() => closed, { timeoutMs: 2_000, what: "the peer to be cut" });
    expect(a.status().successors).toEqual([]);
  });

  test("a connection that has not said hello (or says ready first) is no starting successor: /readyz does not yield to it", async () => {
    const path = uniqueName();
    await using a = await member(path, 101);
    using peer = await rawPeer(path);
    await waitFor(() => peer.received.endsWith("\n"), { what: "the incumbent's hello" });
    expect(a.status().successors).toHaveLength(1);
    expect(a.successorStarting()).toBe(false);
    peer.send(`{"type":"ready"}\n`);
    peer.send(`{"type":"hello","pid":7,"version":"x"}\n`);
    await waitFor(() => a.successorStarting(), { what: "the hello" });
    expect({ ready: a.successorReady(), peerServes: a.peerServes() }).toEqual({ ready: false, peerServes: false });
  });

  test("a socket file whose holder was killed is taken over; the next process follows the new holder", async () => {
    const dir = mkdtempSync(join(tmpdir(), "kubegate-handover-"));
    try {
      const path = join(dir, "handover.sock");
      {
        const script = `Bun.listen({ unix: process.env.SOCK, socket: { data() {} } }); console.log("listening");`;
        await using holder = Bun.spawn([process.execPath, "-e", script], { env: { ...process.env, SOCK: path }, stdout: "pipe", stderr: "inherit" });
        await lineMatching(holder.stdout.getReader(), /^listening$/, 10_000);
        holder.kill("SIGKILL");
        expect(await holder.exited).not.toBe(0);
      }
      expect(existsSync(path)).toBe(true); // the stale socket file: binding it fails with EADDRINUSE, connecting is refused
      await using a = await member(path, 101);
      expect(a.incumbent).toBe(true);
      await using b = await member(path, 102);
      expect(b.incumbent).toBe(false);
      await waitFor(() => a.successorStarting() && b.status().incumbent?.pid === 101, { what: "the successor to reach the new holder" });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
