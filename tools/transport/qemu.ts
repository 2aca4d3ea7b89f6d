/**
 * The `qemu` transport hook. The VM harness owns the VM and its virtio console; it supplies a
 * {@link QemuHook} that returns the byte streams of a bpfd session inside the guest. The spec
 * parser finds hooks by name (`qemu:NAME`) once the harness has called {@link registerQemuHook}.
 *
 * A NAME that is no registered hook but a path (it contains a `/`) names a **launcher**: an
 * executable the VM harness wrote (e.g. `.cache/vm/run-aarch64-6.1.sh`) that boots a VM and
 * serves one bpfd session on its own stdin/stdout. It is spawned like a local runtime, so a host
 * tool in another process can use `--remote qemu:/path/to/launcher`.
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
import { spawnChannel } from "./process.ts";

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
 * Removes the hook registered under `name` (when its VM shuts down); a no-op when there is none.
 *
 * @example
 * ```ts
 * import { registerQemuHook, unregisterQemuHook } from "./qemu.ts";
 * registerQemuHook("arm64", () => Promise.reject(new Error("not booted")));
 * unregisterQemuHook("arm64");
 * ```
 */
export function unregisterQemuHook(name: string): void {
  hooks.delete(name);
}

/**
 * A hook that spawns the launcher `path` (an executable that boots a VM and serves one bpfd
 * session on its stdin/stdout) and returns its stdio as the channel, with its exit status and
 * stderr (the launcher's progress and the VM's console tail) for messages.
 *
 * @example
 * ```ts
 * import { launcherHook } from "./qemu.ts";
 * const hook = launcherHook("/work/main/.cache/vm/run-aarch64-6.1.sh");
 * ```
 */
export function launcherHook(
  path: string,
  opts: { onStderr?: (text: string) => void } = {},
): QemuHook {
  return () => {
    try {
      const st = Deno.statSync(path);
      if (!st.isFile || (st.mode !== null && (st.mode & 0o111) === 0)) {
        throw new Error(`${path} is not an executable file`);
      }
    } catch (e) {
      const why = e instanceof Deno.errors.NotFound ? "does not exist" : (e as Error).message;
      return Promise.reject(
        new Error(
          `qemu launcher ${JSON.stringify(path)} ${why}: the VM lab writes launchers when it ` +
            "boots a VM (tests/vm/lab.ts writeLauncher, e.g. .cache/vm/run-aarch64-6.1.sh); " +
            "run the VM tests once or call writeLauncher, then pass its absolute path",
        ),
      );
    }
    return Promise.resolve(
      spawnChannel([path], {
        onStderr: opts.onStderr,
        missingHint: "the launcher must be an executable file (chmod +x)",
      }),
    );
  };
}

/**
 * The hook registered under `name`; else, when `name` is a path (contains `/`), a
 * {@link launcherHook} for it; else an error that says how to provide one.
 *
 * @example
 * ```ts
 * import { qemuHook } from "./qemu.ts";
 * try { qemuHook("x86_64"); } catch (e) { console.error((e as Error).message); }
 * ```
 */
export function qemuHook(
  name: string,
  opts: { onStderr?: (text: string) => void } = {},
): QemuHook {
  const h = hooks.get(name);
  if (!h && name.includes("/")) return launcherHook(name, opts);
  if (!h) {
    const known = [...hooks.keys()];
    throw new Error(
      `no qemu hook named ${JSON.stringify(name)}` +
        (known.length ? ` (registered: ${known.join(", ")})` : " (none registered)") +
        ": the VM harness must call registerQemuHook(name, hook) before connecting, or pass " +
        "the path of a launcher script (qemu:/abs/path/.cache/vm/run-aarch64-6.1.sh)",
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
