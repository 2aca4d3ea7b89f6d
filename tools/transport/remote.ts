/**
 * `--remote` specs: one string names a transport and its options.
 *
 * | Spec                                           | Transport                                        |
 * | ---------------------------------------------- | ------------------------------------------------ |
 * | `local[,bpfd=CMD]`                             | bpfd as a local child (default: this repo's)     |
 * | `ssh:[user@]host[:port][,key=PATH][,opt=K=V]…[,bpfd=CMD]` | `ssh -T … host CMD` (default `bpfd`)  |
 * | `adb:[serial][,su][,bpfd=PATH]`                | `adb [-s serial] shell [su -c] PATH`             |
 * | `qemu:NAME`                                    | the hook the VM harness registered as NAME       |
 * | `replay:FILE`                                  | a transcript served in place of a runtime        |
 *
 * `bpfd=` takes the rest of the spec, commas and spaces included, so it comes last. For `local`,
 * CMD is split on spaces (no shell); for ssh it is a remote shell command line. An IPv6 host is
 * written in brackets: `ssh:root@[fe80::1%eth0]:2222`.
 *
 * @example
 * ```ts
 * import { connectRemote, parseRemote } from "./remote.ts";
 * console.log(parseRemote("ssh:root@10.0.0.2:2222,key=~/.ssh/board,bpfd=/usr/local/bin/bpfd"));
 * const client = await connectRemote("local");
 * await client.close();
 * ```
 * @module
 */

import {
  type Channel,
  ChannelClient,
  connect,
  type ConnectOptions,
  type Transport,
} from "./channel.ts";
import { processTransport } from "./process.ts";
import { sshTransport } from "./ssh.ts";
import { adbTransport } from "./adb.ts";
import { qemuHook, qemuTransport } from "./qemu.ts";
import { readTranscript } from "../replay/transcript.ts";
import { serveTranscript } from "../replay/serve.ts";

/** A parsed `--remote` spec. */
export type RemoteSpec =
  | { kind: "local"; bpfd?: string[] }
  | {
    kind: "ssh";
    host: string;
    user?: string;
    port?: number;
    key?: string;
    options: string[];
    bpfd?: string;
  }
  | { kind: "adb"; serial?: string; su: boolean; bpfd?: string }
  | { kind: "qemu"; name: string }
  | { kind: "replay"; file: string };

const USAGE = "use local, ssh:[user@]host[:port][,key=PATH][,bpfd=CMD], " +
  "adb:[serial][,su][,bpfd=PATH], qemu:NAME or replay:FILE";

/** Splits `a,b,bpfd=rest,with,commas` into options; `bpfd=` swallows the rest. */
function splitOptions(text: string): { head: string; opts: string[]; bpfd?: string } {
  const at = text.search(/(^|,)bpfd=/);
  let bpfd: string | undefined;
  let rest = text;
  if (at >= 0) {
    const start = text.indexOf("bpfd=", at) + 5;
    bpfd = text.slice(start);
    rest = text.slice(0, at);
    if (bpfd.trim() === "") throw new Error(`--remote: empty bpfd= command; ${USAGE}`);
  }
  const parts = rest.split(",");
  return { head: parts[0], opts: parts.slice(1), bpfd };
}

/**
 * Parses a `--remote` spec. Throws an error that shows the accepted forms.
 *
 * @example
 * ```ts
 * import { parseRemote } from "./remote.ts";
 * parseRemote("adb:emulator-5554,su"); // { kind: "adb", serial: "emulator-5554", su: true }
 * ```
 */
export function parseRemote(spec: string): RemoteSpec {
  const colon = spec.indexOf(":");
  const scheme = colon < 0 ? spec.split(",")[0] : spec.slice(0, colon);
  const body = colon < 0 ? spec.slice(scheme.length) : spec.slice(colon + 1);
  const bad = (why: string) => new Error(`--remote ${JSON.stringify(spec)}: ${why}; ${USAGE}`);
  switch (scheme) {
    case "local": {
      if (colon >= 0) throw bad("local takes no address");
      const { opts, bpfd } = splitOptions(body.replace(/^,/, ""));
      if (opts.length && opts.some((o) => o !== "")) throw bad(`unknown option ${opts[0]}`);
      return bpfd === undefined
        ? { kind: "local" }
        : { kind: "local", bpfd: bpfd.split(" ").filter(Boolean) };
    }
    case "ssh": {
      const { head, opts, bpfd } = splitOptions(body);
      const m = /^(?:([^@\s]+)@)?(\[[^\]]+\]|[^:@\s[\]]+)(?::(\d+))?$/.exec(head);
      if (!m) throw bad("expected [user@]host[:port]");
      const out: RemoteSpec = {
        kind: "ssh",
        host: m[2].replace(/^\[(.*)\]$/, "$1"),
        options: [],
      };
      if (m[1]) out.user = m[1];
      if (m[3]) {
        const port = Number(m[3]);
        if (port < 1 || port > 65535) throw bad(`port ${m[3]} out of range`);
        out.port = port;
      }
      for (const o of opts) {
        if (o.startsWith("key=")) out.key = o.slice(4);
        else if (o.startsWith("opt=")) out.options.push(o.slice(4));
        else throw bad(`unknown ssh option ${JSON.stringify(o)} (key=, opt=, bpfd=)`);
      }
      if (bpfd !== undefined) out.bpfd = bpfd;
      return out;
    }
    case "adb": {
      const { head, opts, bpfd } = splitOptions(body);
      const out: RemoteSpec = { kind: "adb", su: false };
      // `adb:su` is the default device with su (a serial is never just "su").
      const words = head === "su" ? ["", "su", ...opts] : [head, ...opts];
      if (words[0] !== "") out.serial = words[0];
      for (const o of words.slice(1)) {
        if (o === "su") out.su = true;
        else if (o !== "") throw bad(`unknown adb option ${JSON.stringify(o)} (su, bpfd=)`);
      }
      if (bpfd !== undefined) out.bpfd = bpfd;
      return out;
    }
    case "qemu":
      if (!body) throw bad("qemu needs the hook name");
      return { kind: "qemu", name: body };
    case "replay":
      if (!body) throw bad("replay needs a transcript file");
      return { kind: "replay", file: body };
  }
  throw bad(`unknown transport ${JSON.stringify(scheme)}`);
}

/**
 * A transport that serves a transcript file (see `tools/replay/serve.ts`): a fake runtime for
 * deterministic tool tests. The channel's exit status is 0 when the client followed the
 * transcript, 1 (with the divergence as "stderr") when it did not.
 *
 * @example
 * ```ts
 * import { connect } from "./channel.ts";
 * import { replayTransport } from "./remote.ts";
 * const c = await connect(replayTransport("tests/tools/fixtures/session.txt"));
 * await c.close();
 * ```
 */
export function replayTransport(file: string): Transport {
  return {
    kind: "replay",
    describe: () => `replay ${file}`,
    open: async (): Promise<Channel> => {
      const server = serveTranscript(await readTranscript(file), { padPolls: true });
      return {
        readable: server.readable,
        writable: server.writable,
        describe: `replay ${file}`,
        exited: server.done.then((r) => ({
          code: r.ok ? 0 : 1,
          signal: null,
          stderrTail: r.divergence?.message ?? "",
        })),
      };
    },
  };
}

/**
 * The transport for a spec (string or parsed).
 *
 * @example
 * ```ts
 * import { transportFor } from "./remote.ts";
 * console.log(transportFor("adb:,su").describe()); // adb shell su -c /data/local/tmp/bpfd
 * ```
 */
export function transportFor(
  spec: string | RemoteSpec,
  opts: { onStderr?: (text: string) => void; env?: Record<string, string> } = {},
): Transport {
  const s = typeof spec === "string" ? parseRemote(spec) : spec;
  switch (s.kind) {
    case "local":
      return processTransport({ command: s.bpfd, onStderr: opts.onStderr, env: opts.env });
    case "ssh":
      return sshTransport({
        host: s.host,
        user: s.user,
        port: s.port,
        identity: s.key,
        options: s.options,
        bpfd: s.bpfd,
        onStderr: opts.onStderr,
      });
    case "adb":
      return adbTransport({ serial: s.serial, su: s.su, bpfd: s.bpfd, onStderr: opts.onStderr });
    case "qemu":
      return qemuTransport(qemuHook(s.name, { onStderr: opts.onStderr }), s.name);
    case "replay":
      return replayTransport(s.file);
  }
}

/**
 * Parses `spec`, connects, and waits for the banner.
 *
 * @example
 * ```ts
 * import { connectRemote } from "./remote.ts";
 * const c = await connectRemote("ssh:root@board,bpfd=/data/bpfd", { timeoutMs: 10_000 });
 * console.log(await c.send("GET_CPUS"));
 * await c.close();
 * ```
 */
export function connectRemote(
  spec: string | RemoteSpec,
  opts: ConnectOptions & { onStderr?: (text: string) => void } = {},
): Promise<ChannelClient> {
  return connect(transportFor(spec, { onStderr: opts.onStderr }), opts);
}
