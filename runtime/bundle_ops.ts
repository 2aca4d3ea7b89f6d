/**
 * The bundle commands: upload over the channel (BUNDLE_BEGIN/CHUNK/END),
 * loading the object that fits this kernel (BUNDLE_LOAD) and attaching its
 * programs by section (BPF_ATTACH_PROG). Every fd created is registered in the
 * session, so the ordinary commands work on them and teardown releases them.
 *
 * @example
 * ```ts
 * import { BundleOps } from "./bundle_ops.ts";
 * // const b = new BundleOps(session, store);
 * // await b.load("/data/local/tmp/opensnoop.oci.tar", ["attach=all"]);
 * ```
 * @module
 */

import { BundleError, readBundle } from "../artifacts/oci.ts";
import { ManifestError } from "../artifacts/manifest.ts";
import { type ModePreference, selectObject } from "../artifacts/select.ts";
import { SysError } from "./kernel/errno.ts";
import { targetFacts } from "./kernel/target.ts";
import { BpfObjectError, parseObject } from "../artifacts/bpf_object.ts";
import { type LoadedProgram, loadObject, type RodataValue } from "./loader/load.ts";
import { attachProgram } from "./loader/attach.ts";
import { decodeBase64 } from "./protocol/base64.ts";
import { status } from "./protocol/response.ts";
import { BundleStore, CHUNK_SIZE } from "./bundle_store.ts";
import type { Session } from "./session.ts";
import { mapInfo } from "./kernel/bpf.ts";

type Body = string[];

/** Parses `key=value` option tokens; unknown keys are refused. */
function options(tokens: string[], allowed: string[]): Map<string, string> {
  const out = new Map<string, string>();
  for (const t of tokens) {
    const i = t.indexOf("=");
    const k = i < 0 ? t : t.slice(0, i);
    if (!allowed.some((a) => (a.endsWith(".") ? k.startsWith(a) : k === a))) {
      throw new SysError(
        22,
        `unknown option ${JSON.stringify(k.slice(0, 40))} (known: ${allowed.join(", ")})`,
      );
    }
    out.set(k, i < 0 ? "" : t.slice(i + 1));
  }
  return out;
}

function rodataValue(name: string, v: string): RodataValue {
  if (v.startsWith("b64:")) return decodeBase64(v.slice(4));
  if (/^-?[0-9]+$/.test(v)) return BigInt(v);
  if (v === "true" || v === "false") return v === "true";
  throw new SysError(
    22,
    `rodata.${name}=${v.slice(0, 40)}: want a decimal integer, true/false or b64:<bytes>`,
  );
}

/** Bundle commands against one session. */
export class BundleOps {
  #s: Session;
  #store: BundleStore;
  /** Programs loaded from bundles, by fd (for BPF_ATTACH_PROG). */
  #progs = new Map<number, LoadedProgram>();

  constructor(session: Session, store: BundleStore) {
    this.#s = session;
    this.#store = store;
  }

  /** BUNDLE_BEGIN: `have <path>` when the device has it already, else `send <chunk size>`. */
  begin(digest: string, size: number): Body {
    const have = this.#store.lookup(digest);
    if (have) return [status("bundle_begin", 0), `have ${have}`];
    this.#store.begin(digest, size);
    return [status("bundle_begin", 0), `send ${CHUNK_SIZE}`];
  }

  /** BUNDLE_CHUNK. */
  chunk(digest: string, offset: number, b64: string): Body {
    let bytes: Uint8Array;
    try {
      bytes = decodeBase64(b64);
    } catch (e) {
      throw new SysError(22, `chunk data: ${(e as Error).message}`);
    }
    return [status("bundle_chunk", this.#store.chunk(digest, offset, bytes))];
  }

  /** BUNDLE_END. */
  async end(digest: string): Promise<Body> {
    return [status("bundle_end", 0), `path ${await this.#store.end(digest)}`];
  }

  /** BUNDLE_LOAD: select, verify, load, register, optionally attach. */
  async load(path: string, opts: string[]): Promise<Body> {
    const o = options(opts, ["mode", "attach", "programs", "rodata.", "max."]);
    const mode = (o.get("mode") ?? "auto") as ModePreference;
    if (!["auto", "core", "headers"].includes(mode)) {
      throw new SysError(22, `mode=${mode}: want auto, core or headers`);
    }
    let bundle;
    try {
      bundle = await readBundle(path);
    } catch (e) {
      if (e instanceof ManifestError) throw new SysError(22, `${path}: ${e.message}`);
      if (e instanceof BundleError) {
        throw new SysError(/no bundle at/.test(e.message) ? 2 : 74, `${path}: ${e.message}`);
      }
      throw new SysError(74, `${path}: ${(e as Error).message}`);
    }
    const t = targetFacts();
    const sel = selectObject(bundle.manifest, {
      machine: t.machine,
      release: t.release,
      btf: t.btf,
    }, mode);
    if (!sel.ok) throw new SysError(8, sel.reason);
    const obj = sel.object;
    const bytes = bundle.objects.get(obj.name)!; // digest verified by readBundle
    let spec;
    try {
      spec = parseObject(bytes, obj.name);
    } catch (e) {
      if (e instanceof BpfObjectError) throw new SysError(8, e.message);
      throw e;
    }
    const rodata: Record<string, RodataValue> = {};
    for (const [k, v] of o) {
      if (k.startsWith("rodata.")) rodata[k.slice(7)] = rodataValue(k.slice(7), v);
    }
    const maxEntries: Record<string, number> = {};
    for (const [k, v] of o) {
      if (!k.startsWith("max.")) continue;
      if (!/^[0-9]+$/.test(v)) {
        throw new SysError(22, `${k}=${v.slice(0, 40)}: want a decimal number of entries`);
      }
      maxEntries[k.slice(4)] = Number(v);
    }
    const only = o.get("programs")?.split(",").filter(Boolean);
    const room = this.#s.maxFds - this.#s.size;
    const need = spec.maps.length + spec.programs.length + 1;
    if (need > room) {
      throw new SysError(24, `loading needs ${need} fds, the session has ${room} left`);
    }
    const loaded = loadObject(spec, {
      rodata,
      maxEntries,
      programs: only,
      register: (r) => {
        if (r.kind === "map") this.#s.add({ kind: "map", fd: r.fd, info: mapInfo(r.fd) });
        else if (r.kind === "prog") {
          this.#s.add({ kind: "prog", fd: r.fd, type: r.type, name: r.name });
        } else this.#s.add({ kind: "btf", fd: r.fd, what: `btf of ${r.name}` });
      },
    });
    const out: string[] = [
      `object ${obj.name} arch=${obj.arch} mode=${obj.mode} release=${obj.kernel.release} ` +
      `digest=${obj.digest} bundle=${bundle.digest} tool=${bundle.manifest.tool.name} ` +
      `version=${bundle.manifest.tool.version}`,
    ];
    for (const m of Object.values(loaded.maps)) {
      const s = m.spec;
      out.push(
        `map ${m.fd} ${m.name} type=${s.type} key=${s.keySize} value=${s.valueSize} max=${m.maxEntries}`,
      );
    }
    for (const p of Object.values(loaded.programs)) {
      this.#progs.set(p.fd, p);
      out.push(`prog ${p.fd} ${p.name} type=${p.type} section=${p.section}`);
    }
    for (const w of loaded.warnings) out.push(`warning ${w}`);
    const attach = o.get("attach") ?? "none";
    if (attach !== "none") {
      const names = attach === "all" ? Object.keys(loaded.programs) : attach.split(",");
      for (const n of names) {
        const p = loaded.programs[n];
        if (!p) {
          throw new SysError(
            2,
            `attach=${n}: no such program (loaded: ${Object.keys(loaded.programs).join(", ")})`,
          );
        }
        if (p.attach.kind === "none" || p.attach.kind === "perf_event") continue;
        out.push(`attach ${this.#attach(p, {}).join(" ")}`);
      }
    }
    return [status("bundle_load", Object.keys(loaded.programs).length), ...out];
  }

  #attach(p: LoadedProgram, o: { target?: string; pid?: number }): [number, string, string] {
    this.#s.checkRoom();
    const a = attachProgram(p, o);
    if (a.attachment) this.#s.add({ kind: "attachment", fd: a.fd, att: a.attachment, key: a.what });
    else this.#s.add({ kind: "link", fd: a.fd, what: a.what });
    return [a.fd, p.name, a.what];
  }

  /** BPF_ATTACH_PROG: attach a bundle program by its section (or `target=`). */
  attachProg(progFd: number, opts: string[]): Body {
    this.#s.get(progFd, "prog");
    const p = this.#progs.get(progFd);
    if (!p) {
      throw new SysError(
        22,
        `prog fd ${progFd} was not loaded from a bundle; use BPF_ATTACH_* for it`,
      );
    }
    const o = options(opts, ["target", "pid"]);
    const pid = o.has("pid") ? Number(o.get("pid")) : undefined;
    if (pid !== undefined && !Number.isInteger(pid)) {
      throw new SysError(22, "pid= needs an integer");
    }
    const [fd, , what] = this.#attach(p, { target: o.get("target"), pid });
    return [status("bpf_attach_prog", fd), `attached ${what}`];
  }

  /** Forgets a program fd that was closed. */
  forget(fd: number): void {
    this.#progs.delete(fd);
  }
}
