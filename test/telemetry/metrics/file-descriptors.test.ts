/**
 * `kubegate_file_descriptors` and `kubegate_listener_bind_failures`: open descriptors, the limit and the reserve
 * per process (a worker's labelled), every bind failure reason written (0 when none), unknowns left out.
 */
import { expect, test } from "bun:test";
import { FileDescriptorMetrics, Registry } from "../../../src/telemetry/metrics/index.ts";

test("the scrape: the process's descriptors, each worker's, and bind failures by reason", () => {
  const registry = new Registry();
  let failures = new Map([["too_many_open_files", 181]]);
  registry.register(
    new FileDescriptorMetrics({
      files: () => [
        { worker: 1, open: 230, limit: 300, reserve: 75 },
        { open: 31, limit: 300, reserve: 75 },
        { worker: 0, open: undefined, limit: Infinity },
      ],
      bindFailures: () => failures,
    }),
  );
  expect(registry.expose()).toBe(
    [
      "# HELP kubegate_file_descriptors File descriptors of the gateway's process (with a worker label: of that worker process, when reported): open now, the soft limit (RLIMIT_NOFILE), and the reserve kept from new listeners for health, admin and the API watch.",
      "# TYPE kubegate_file_descriptors gauge",
      'kubegate_file_descriptors{kind="open"} 31',
      'kubegate_file_descriptors{kind="limit"} 300',
      'kubegate_file_descriptors{kind="reserve"} 75',
      'kubegate_file_descriptors{kind="open",worker="1"} 230',
      'kubegate_file_descriptors{kind="limit",worker="1"} 300',
      'kubegate_file_descriptors{kind="reserve",worker="1"} 75',
      "# HELP kubegate_listener_bind_failures Listeners that cannot be bound now, by reason; too_many_open_files: raise the nofile limit or narrow --nodeport-addresses.",
      "# TYPE kubegate_listener_bind_failures gauge",
      'kubegate_listener_bind_failures{reason="address_in_use"} 0',
      'kubegate_listener_bind_failures{reason="address_not_available"} 0',
      'kubegate_listener_bind_failures{reason="permission_denied"} 0',
      'kubegate_listener_bind_failures{reason="too_many_open_files"} 181',
      'kubegate_listener_bind_failures{reason="other"} 0',
      "",
    ].join("\n"),
  );
  failures = new Map();
  expect(registry.expose()).toContain('kubegate_listener_bind_failures{reason="too_many_open_files"} 0\n');
});
