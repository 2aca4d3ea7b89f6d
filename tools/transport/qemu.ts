/**
 * The `qemu` transport hook. The VM harness owns the VM and its virtio console; it supplies a
 * {@link QemuHook} that returns the byte streams of a bpfd session inside the guest. The spec
 * parser finds hooks by name (`qemu:NAME`) once the harness has called {@link registerQemuHook}.
 *
 * @example
 * ```ts
 * import { connect } from "./channel.ts";
 * import { qemuTransport } from "./qemu.ts";
 * const t = qemuTransport(async () => {
 *   const conn = await Deno.connect({ transport: "unix", path: "/tmp/vm/bpfd.sock" });
 *   return { readable: conn.readable, writable: conn.writable, describe: "vm bpfd.sock" };
 * });
 * const c = await connect(t);
 * await c.close();
 * ```
 * @module
 */

import type { Channel, Transport } from "./channel.ts";

/** What a hook returns: a {@link Channel} (only the streams are required). */
export type QemuStreams = Pick<Channel, "readable" | "writable"> & Partial<Channel>;

/** Opens a bpfd session in a VM and returns its streams. */
export type QemuHook = () => Promise<QemuStreams>;

const hooks = new Map<string, QemuHook>();

/**
 * Registers a hook under `name` so that `--remote qemu:NAME` finds it.
 *
 * @example
 * ```ts
 * import { registerQemuHook } from "./qemu.ts";
 * registerQemuHook("arm64", () => Promise.reject(new Error("not booted")));
 * ```
 */
export function registerQemuHook(name: string, hook: QemuHook): void {
  hooks.set(name, hook);
}

/**
 * The hook registered under `name`, or an error that says how to provide one.
 *
 * @example
 * ```ts
 * import { qemuHook } from "./qemu.ts";
 * try { qemuHook("x86_64"); } catch (e) { console.error((e as Error).message); }
 * ```
 */
export function qemuHook(name: string): QemuHook {
  const h = hooks.get(name);
  if (!h) {
    const known = [...hooks.keys()];
    throw new Error(
      `no qemu hook named ${JSON.stringify(name)}` +
        (known.length ? ` (registered: ${known.join(", ")})` : " (none registered)") +
        ": the VM harness must call registerQemuHook(name, hook) before connecting",
    );
  }
  return h;
}

/**
 * The qemu transport over a hook.
 *
 * @example
 * ```ts
 * import { qemuTransport } from "./qemu.ts";
 * const t = qemuTransport(() => Promise.resolve(new TransformStream<Uint8Array, Uint8Array>()), "loop");
 * console.log(t.describe()); // qemu loop
 * ```
 */
export function qemuTransport(hook: QemuHook, name = "vm"): Transport {
  return {
    kind: "qemu",
    describe: () => `qemu ${name}`,
    open: async () => {
      const s = await hook();
      return { describe: `qemu ${name}`, ...s };
    },
  };
}
