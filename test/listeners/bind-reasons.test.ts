/**
 * The words for a failed bind (`bind-queue.ts`): each errno's reason, EMFILE with the limit, the reserve and what
 * to do, and the `reason` label read back from a message (for `kubegate_listener_bind_failures`).
 */
import { describe, expect, test } from "bun:test";
import { bindErrorMessage, bindFailureReason, bindFailuresByReason, bindReason, FILE_LIMIT_ADVICE } from "../../src/listeners/bind-queue.ts";
import { BIND_FAILURE_REASONS } from "../../src/telemetry/metrics/file-descriptors.ts";

const withCode = (code: string, extra: object = {}) => Object.assign(new Error(`Failed to listen at 127.0.0.1`), { code, ...extra });
const message = (err: unknown) => bindErrorMessage(`Cannot bind listener "ns/web:http"`, "127.0.0.1", 30080, err);

describe("bind reasons", () => {
  test.each([
    ["EADDRINUSE", "address already in use", "address_in_use"],
    ["EADDRNOTAVAIL", "address not available on this host", "address_not_available"],
    ["EACCES", "permission denied (ports below 1024 need CAP_NET_BIND_SERVICE; a LoadBalancer port can be moved up with --lb-port-offset)", "permission_denied"],
    ["EMFILE", `too many open files (EMFILE): ${FILE_LIMIT_ADVICE}`, "too_many_open_files"],
    ["ENFILE", "the system's file table is full (ENFILE): raise fs.file-max", "too_many_open_files"],
  ])("%s: %s, labelled %s", (code, reason, label) => {
    expect(bindReason(withCode(code))).toBe(reason);
    expect(message(withCode(code))).toBe(`Cannot bind listener "ns/web:http" on 127.0.0.1:30080: ${reason}`);
    expect(bindFailureReason(message(withCode(code)))).toBe(label as never);
  });

  test("EMFILE names the limit, and the reserve when one is kept", () => {
    expect(bindReason(withCode("EMFILE", { limit: 300 }))).toBe(`too many open files (EMFILE: the limit of 300 is reached): ${FILE_LIMIT_ADVICE}`);
    expect(bindReason(withCode("EMFILE", { limit: 300, reserve: 75 }))).toBe(
      `too many open files (EMFILE: the limit is 300, of which 75 are kept for health, admin and the API watch): ${FILE_LIMIT_ADVICE}`,
    );
    expect(bindFailureReason(message(withCode("EMFILE", { limit: 300, reserve: 75 })))).toBe("too_many_open_files");
  });

  test("an error without a known code is its own message, labelled other", () => {
    expect(bindReason(new Error("Failed to listen at 127.0.0.1"))).toBe("Failed to listen at 127.0.0.1");
    expect(bindReason("port conflict with ns/other")).toBe("port conflict with ns/other");
    expect(bindFailureReason(message(new Error("Failed to listen at 127.0.0.1")))).toBe("other");
  });

  test("bindFailuresByReason counts unbound listeners with an error; every label is one the metric writes", () => {
    const states = [
      { key: "a", listeners: [{ bound: true }, { bound: false, error: message(withCode("EMFILE", { limit: 300, reserve: 75 })) }] },
      { key: "b", listeners: [{ bound: false, error: message(withCode("EMFILE")) }, { bound: false, error: message(withCode("EADDRINUSE")) }] },
      { key: "c", listeners: [{ bound: false, error: undefined }] }, // still binding
    ];
    expect(bindFailuresByReason(states)).toEqual(new Map([["too_many_open_files", 2], ["address_in_use", 1]]));
    for (const code of ["EADDRINUSE", "EADDRNOTAVAIL", "EACCES", "EPERM", "EMFILE", "ENFILE", "EOTHER"]) {
      expect(BIND_FAILURE_REASONS).toContain(bindFailureReason(message(withCode(code))));
    }
  });
});
