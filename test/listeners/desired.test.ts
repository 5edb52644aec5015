/** Which listeners a snapshot asks for (the pure half of reconciliation). */
import { describe, expect, test } from "bun:test";
import { desiredListeners, hostPort, listenerKey } from "../../src/listeners/desired.ts";
import { entrypoint, snapshot } from "../support/entrypoints.ts";

describe("desiredListeners", () => {
  test("one listener per address and port, keyed by address|port|transport", () => {
    const web = entrypoint({ name: "ns/web:http", protocol: "http", addresses: ["10.0.0.1", "fd00::1"], port: 30080 });
    const db = entrypoint({ name: "ns/db:tcp", protocol: "tcp", addresses: ["10.0.0.1"], port: 30432 });
    const { listeners, skipped } = desiredListeners(snapshot(web, db));
    expect([...listeners.values()]).toEqual([
      { key: "10.0.0.1|30432|tcp", address: "10.0.0.1", port: 30432, protocol: "tcp", entrypoint: db },
      { key: "10.0.0.1|30080|tcp", address: "10.0.0.1", port: 30080, protocol: "http", entrypoint: web },
      { key: "fd00::1|30080|tcp", address: "fd00::1", port: 30080, protocol: "http", entrypoint: web },
    ]);
    expect(skipped).toEqual([]);
  });

  test("entrypoints with errors are left out; UDP ones are skipped with a reason when UDP is off", () => {
    const bad = entrypoint({ name: "ns/bad:tcp", port: 30001, error: "Port 30001 on 127.0.0.1 is already used by \"ns/x:tcp\"" });
    const dns = entrypoint({ name: "ns/dns:udp", protocol: "udp", port: 30053 });
    const { listeners, skipped } = desiredListeners(snapshot(bad, dns), { udp: false });
    expect(listeners.size).toBe(0);
    expect(skipped).toEqual([{ entrypoint: dns, reason: "UDP entrypoints are not served: no UDP proxy is configured" }]);
  });

  test("UDP entrypoints get udp-keyed listeners that coexist with TCP on the same port", () => {
    const dnsUdp = entrypoint({ name: "ns/dns:dns", protocol: "udp", port: 30053 });
    const dnsTcp = entrypoint({ name: "ns/dns:dns-tcp", protocol: "tcp", port: 30053 });
    const { listeners, skipped } = desiredListeners(snapshot(dnsUdp, dnsTcp));
    expect([...listeners.values()]).toEqual([
      { key: "127.0.0.1|30053|udp", address: "127.0.0.1", port: 30053, protocol: "udp", entrypoint: dnsUdp },
      { key: "127.0.0.1|30053|tcp", address: "127.0.0.1", port: 30053, protocol: "tcp", entrypoint: dnsTcp },
    ]);
    expect(skipped).toEqual([]);
  });

  test("a second claim on the same address and port loses to the first (by key)", () => {
    const a = entrypoint({ name: "ns/a:tcp", port: 30000, addresses: ["127.0.0.1", "::1"] });
    const b = entrypoint({ name: "ns/b:tcp", port: 30000, addresses: ["::1"] });
    const { listeners, skipped } = desiredListeners(snapshot(b, a));
    expect([...listeners.keys()]).toEqual(["127.0.0.1|30000|tcp", "::1|30000|tcp"]);
    expect(skipped).toEqual([{ entrypoint: b, address: "::1", reason: 'Port 30000 on ::1 is already used by "ns/a:tcp"' }]);
  });

  test("helpers", () => {
    expect(listenerKey("::1", 80)).toBe("::1|80|tcp");
    expect(listenerKey("127.0.0.1", 53, "udp")).toBe("127.0.0.1|53|udp");
    expect([hostPort("127.0.0.1", 80), hostPort("::1", 80)]).toEqual(["127.0.0.1:80", "[::1]:80"]);
  });
});
