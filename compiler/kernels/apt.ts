/**
 * A private apt state per Debian architecture, so kernel packages of any
 * architecture can be looked up and downloaded without touching the host's
 * dpkg database, sources or preferences:
 *
 * ```
 * apt-get -o Dir::Etc::SourceList=/dev/null -o Dir::Etc::SourceParts=<w>/srcparts
 *   -o Dir::State::Lists=<w>/lists -o Dir::Cache=<w>/cache -o Dir::State::status=/dev/null
 *   -o APT::Architecture=<arch> -o APT::Architectures::=<arch> …
 * ```
 *
 * `<w>/srcparts` holds a copy of the machine's
 * `/etc/apt/sources.list.d/debian.sources` plus a `bookworm-backports` suite
 * (used with `APT::Default-Release=bookworm-backports` for 6.12 kernels).
 *
 * @example
 * ```ts
 * import { openAptState, updateLists, showPackage } from "./apt.ts";
 * const apt = await openAptState(".cache/kernels", "arm64");
 * await updateLists(apt, { maxAgeMs: 0 });
 * console.log((await showPackage(apt, "linux-image-cloud-arm64"))?.depends);
 * ```
 * @module
 */

import { KernelInputError } from "./errors.ts";
import { run } from "./exec.ts";
import { exists, withLock, writeFileAtomic } from "./fs_util.ts";

/**
 * The host file the private sources are copied from.
 *
 * @example
 * ```ts
 * import { HOST_SOURCES } from "./apt.ts";
 * console.log(HOST_SOURCES); // "/etc/apt/sources.list.d/debian.sources"
 * ```
 */
export const HOST_SOURCES = "/etc/apt/sources.list.d/debian.sources";

const FALLBACK_SOURCES = `Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
`;

/**
 * One private apt state (one Debian architecture).
 *
 * @example
 * ```ts
 * import type { AptState } from "./apt.ts";
 * const apt: AptState = { dir: "/work/main/.cache/kernels/apt/arm64", debArch: "arm64" };
 * ```
 */
export interface AptState {
  /** State directory `<cache>/apt/<debArch>`. */
  dir: string;
  /** Debian architecture (`amd64`, `arm64`). */
  debArch: string;
  /** Extra apt configuration (`-o key=value`), e.g. a proxy or mirror setting. */
  config?: Record<string, string>;
}

/**
 * The `-o` options that make apt use only the private state.
 *
 * @example
 * ```ts
 * import { aptOptions } from "./apt.ts";
 * console.log(aptOptions({ dir: "/c/apt/arm64", debArch: "arm64" }).join(" "));
 * ```
 */
export function aptOptions(state: AptState, defaultRelease?: string): string[] {
  const w = state.dir;
  const opts = [
    `Dir::Etc::SourceList=/dev/null`,
    `Dir::Etc::SourceParts=${w}/srcparts`,
    `Dir::Etc::Preferences=/dev/null`,
    `Dir::Etc::PreferencesParts=${w}/preferences.d`,
    `Dir::State::Lists=${w}/lists`,
    `Dir::Cache=${w}/cache`,
    `Dir::State::status=/dev/null`,
    `APT::Architecture=${state.debArch}`,
    `APT::Architectures::=${state.debArch}`,
    `Acquire::Languages=none`,
    `Acquire::http::Timeout=20`,
    `Acquire::Retries=1`,
  ];
  if (Deno.uid() === 0) opts.push("APT::Sandbox::User=root"); // private dirs need no _apt
  if (defaultRelease) opts.push(`APT::Default-Release=${defaultRelease}`);
  for (const [k, v] of Object.entries(state.config ?? {})) opts.push(`${k}=${v}`);
  return opts.flatMap((o) => ["-o", o]);
}

/**
 * Create (or reuse) the private apt state for a Debian architecture under
 * `<cacheDir>/apt/<debArch>`: the sources (host's debian.sources + backports)
 * and the directories apt expects.
 *
 * @example
 * ```ts
 * import { openAptState } from "./apt.ts";
 * const apt = await openAptState("/work/main/.cache/kernels", "amd64");
 * ```
 */
export async function openAptState(
  cacheDir: string,
  debArch: string,
  opts: { config?: Record<string, string> } = {},
): Promise<AptState> {
  const config = opts.config;
  const dir = `${cacheDir}/apt/${debArch}`;
  for (const d of ["srcparts", "preferences.d", "lists/partial", "cache/archives/partial"]) {
    await Deno.mkdir(`${dir}/${d}`, { recursive: true });
  }
  let sources: string;
  try {
    sources = await Deno.readTextFile(HOST_SOURCES);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
    sources = FALLBACK_SOURCES;
  }
  if (!/^Suites:.*\bbookworm-backports\b/m.test(sources)) {
    const uri = /^URIs:\s*(\S+\/debian)\s*$/m.exec(sources)?.[1] ?? "http://deb.debian.org/debian";
    const keyring = /^Signed-By:\s*(\S+)\s*$/m.exec(sources)?.[1] ??
      "/usr/share/keyrings/debian-archive-keyring.gpg";
    sources = sources.trimEnd() + "\n\n" +
      `Types: deb\nURIs: ${uri}\nSuites: bookworm-backports\nComponents: main\n` +
      `Signed-By: ${keyring}\n`;
  }
  const target = `${dir}/srcparts/debian.sources`;
  const current = await Deno.readTextFile(target).catch(() => "");
  if (current !== sources) {
    await writeFileAtomic(target, sources);
    await Deno.remove(`${dir}/updated-at`).catch(() => {}); // lists no longer match: update
  }
  return { dir, debArch, config };
}

const NETWORK_ERRORS =
  /Temporary failure resolving|Could not resolve|Failed to fetch|Unable to connect|Could not connect|Connection failed|Connection timed out|Network is unreachable|No route to host|Cannot initiate the connection/i;

/**
 * Whether apt output reports that the archive could not be reached.
 *
 * @example
 * ```ts
 * import { isNetworkFailure } from "./apt.ts";
 * console.log(isNetworkFailure("Err:1 http://deb.debian.org/debian bookworm InRelease\n  Temporary failure resolving 'deb.debian.org'"));
 * ```
 */
export function isNetworkFailure(output: string): boolean {
  return NETWORK_ERRORS.test(output);
}

function firstProblem(output: string): string {
  const lines = output.split("\n").map((l) => l.trim()).filter(Boolean);
  return lines.find((l) => NETWORK_ERRORS.test(l) && !/^W: Some index/.test(l)) ??
    lines.find((l) => /^(E|W|Err):/.test(l)) ?? lines.at(-1) ?? "(no output)";
}

/**
 * Outcome of {@link updateLists}.
 *
 * @example
 * ```ts
 * import type { ListsState } from "./apt.ts";
 * const s: ListsState = "fresh"; // lists recent enough, archive not contacted
 * ```
 */
export type ListsState = "fresh" | "updated" | "stale";

/**
 * Options of {@link updateLists}.
 *
 * @example
 * ```ts
 * import type { UpdateOptions } from "./apt.ts";
 * const o: UpdateOptions = { maxAgeMs: 3600_000, onProgress: console.log };
 * ```
 */
export interface UpdateOptions {
  /** Lists younger than this are used without contacting the archive (default 24 h). */
  maxAgeMs?: number;
  /** Never contact the archive; fail if there are no lists yet. */
  offline?: boolean;
  /** Progress lines. */
  onProgress?: (msg: string) => void;
}

/** Age of the private package lists in ms, or `undefined` when there are none. */
async function listsAge(state: AptState): Promise<number | undefined> {
  try {
    const t = Number(await Deno.readTextFile(`${state.dir}/updated-at`));
    return Number.isFinite(t) ? Date.now() - t : undefined;
  } catch {
    return undefined;
  }
}

async function haveLists(state: AptState): Promise<boolean> {
  for await (const e of Deno.readDir(`${state.dir}/lists`)) {
    if (/_Packages(\.(lz4|gz|xz|zst|bz2))?$/.test(e.name)) return true;
  }
  return false;
}

/**
 * Make sure the private package lists exist and are recent: `apt-get update`
 * in the private state when they are missing or older than `maxAgeMs`. If the
 * archive cannot be reached but older lists exist, those are used ("stale",
 * with a progress warning); with no lists at all it throws `network`.
 *
 * @example
 * ```ts
 * import { openAptState, updateLists } from "./apt.ts";
 * const apt = await openAptState("/tmp/k", "arm64");
 * console.log(await updateLists(apt, { onProgress: console.log }));
 * ```
 */
export async function updateLists(state: AptState, opts: UpdateOptions = {}): Promise<ListsState> {
  const maxAge = opts.maxAgeMs ?? 24 * 3600_000;
  return await withLock(`${state.dir}/lock`, async () => {
    const age = await listsAge(state);
    const have = age !== undefined && await haveLists(state);
    if (have && age! < maxAge) return "fresh";
    if (opts.offline) {
      if (have) return "stale";
      throw new KernelInputError(
        "network",
        `offline, and no package lists for ${state.debArch} in ${state.dir}: run once with network ` +
          "access (without offline) so the archive can be indexed, or use a kernel tree/BTF file",
      );
    }
    opts.onProgress?.(`apt-get update (private state ${state.dir})`);
    const r = await run("apt-get", [...aptOptions(state), "-q", "update"], {
      allowFailure: true,
      onLine: (l) => {
        if (/^(Get|Err|W|E):/.test(l.trim())) opts.onProgress?.(`  ${l.trim()}`);
      },
    });
    const failed = r.code !== 0 || isNetworkFailure(r.stderr);
    if (!failed) {
      await writeFileAtomic(`${state.dir}/updated-at`, `${Date.now()}\n`);
      return "updated";
    }
    const why = firstProblem(r.stderr);
    if (isNetworkFailure(r.stderr)) {
      if (have) {
        opts.onProgress?.(
          `warning: cannot reach the Debian archive (${why}); using package lists from ` +
            `${Math.round(age! / 3600_000)} h ago`,
        );
        return "stale";
      }
      throw new KernelInputError(
        "network",
        `cannot reach the Debian archive (${why}). Check the network or proxy ` +
          "(http_proxy, Acquire::http::Proxy in /etc/apt/apt.conf.d), or build from a local " +
          "kernel tree or BTF file instead of a Debian kernel",
      );
    }
    throw new KernelInputError(
      "command-failed",
      `apt-get update failed in the private state ${state.dir}: ${why}. ` +
        `Check ${state.dir}/srcparts/debian.sources and the keyring it names`,
    );
  });
}

/**
 * Candidate-version fields of a package (from `apt-cache show`).
 *
 * @example
 * ```ts
 * import type { PackageInfo } from "./apt.ts";
 * const p: PackageInfo = {
 *   name: "linux-headers-cloud-arm64",
 *   version: "6.1.119-1",
 *   depends: ["linux-headers-6.1.0-28-cloud-arm64"],
 *   size: 1234,
 * };
 * ```
 */
export interface PackageInfo {
  /** Package name. */
  name: string;
  /** Candidate version. */
  version: string;
  /** Package names in `Depends:` (alternatives flattened, version constraints dropped). */
  depends: string[];
  /** `.deb` size in bytes. */
  size: number;
  /** `SHA256:` of the .deb as the archive lists it. */
  sha256?: string;
  /** `Architecture:` (`amd64`, `arm64`, `all`); the `.deb` file name ends with it. */
  architecture?: string;
}

function parseStanza(text: string): PackageInfo | undefined {
  const field = (f: string) => new RegExp(`^${f}: (.*)$`, "m").exec(text)?.[1]?.trim();
  const name = field("Package");
  if (!name) return undefined;
  const depends = (field("Depends") ?? "").split(/[,|]/).map((d) => d.trim().split(/[\s(]/)[0])
    .filter(Boolean);
  return {
    name,
    version: field("Version") ?? "",
    depends,
    size: Number(field("Size") ?? 0),
    sha256: field("SHA256"),
    architecture: field("Architecture"),
  };
}

/**
 * Candidate versions of several packages in the private state (honouring
 * `defaultRelease`), in one `apt-cache show` run (each run parses all lists,
 * ~1 s). Packages the lists do not have are absent from the map.
 *
 * @example
 * ```ts
 * import { openAptState, showPackages } from "./apt.ts";
 * const apt = await openAptState("/tmp/k", "amd64");
 * const m = await showPackages(apt, ["linux-headers-cloud-amd64", "linux-image-cloud-amd64"], {
 *   defaultRelease: "bookworm-backports",
 * });
 * console.log(m.get("linux-image-cloud-amd64")?.depends);
 * ```
 */
export async function showPackages(
  state: AptState,
  names: string[],
  opts: { defaultRelease?: string } = {},
): Promise<Map<string, PackageInfo>> {
  const r = await run(
    "apt-cache",
    [...aptOptions(state, opts.defaultRelease), "show", "--no-all-versions", ...names],
    { allowFailure: true },
  );
  const out = new Map<string, PackageInfo>();
  for (const stanza of new TextDecoder().decode(r.stdout).split(/\n\s*\n/)) {
    const info = parseStanza(stanza);
    if (info && names.includes(info.name) && !out.has(info.name)) out.set(info.name, info);
  }
  return out;
}

/**
 * The candidate version of one package (see {@link showPackages}), or
 * `undefined` when the lists do not have it.
 *
 * @example
 * ```ts
 * import { openAptState, showPackage } from "./apt.ts";
 * const apt = await openAptState("/tmp/k", "amd64");
 * const p = await showPackage(apt, "linux-headers-cloud-amd64", {
 *   defaultRelease: "bookworm-backports",
 * });
 * console.log(p?.version, p?.depends);
 * ```
 */
export async function showPackage(
  state: AptState,
  name: string,
  opts: { defaultRelease?: string } = {},
): Promise<PackageInfo | undefined> {
  return (await showPackages(state, [name], opts)).get(name);
}

/**
 * An opaque token that changes whenever the private lists are updated (for
 * memoising answers derived from them); `undefined` before the first update.
 *
 * @example
 * ```ts
 * import { listsToken, openAptState } from "./apt.ts";
 * console.log(await listsToken(await openAptState("/tmp/k", "arm64")));
 * ```
 */
export async function listsToken(state: AptState): Promise<string | undefined> {
  return (await Deno.readTextFile(`${state.dir}/updated-at`).catch(() => "")).trim() ||
    undefined;
}

/**
 * Download packages (candidate versions) with `apt-get download` in the private
 * state into `opts.destDir`; returns the .deb paths in the order asked.
 *
 * @example
 * ```ts
 * import { downloadPackages, openAptState } from "./apt.ts";
 * const apt = await openAptState("/tmp/k", "arm64");
 * const [deb] = await downloadPackages(apt, ["linux-headers-6.1.0-28-common"], {
 *   destDir: "/tmp/debs",
 * });
 * ```
 */
export async function downloadPackages(
  state: AptState,
  names: string[],
  opts: { destDir: string; defaultRelease?: string; onProgress?: (msg: string) => void },
): Promise<string[]> {
  const destDir = opts.destDir;
  await Deno.mkdir(destDir, { recursive: true });
  const r = await run(
    "apt-get",
    [...aptOptions(state, opts.defaultRelease), "-q", "download", ...names],
    {
      cwd: destDir,
      allowFailure: true,
      onLine: (l) => {
        if (/^(Get|Err|E|W):/.test(l.trim())) opts.onProgress?.(`  ${l.trim()}`);
      },
    },
  );
  if (r.code !== 0) {
    const why = firstProblem(r.stderr);
    if (isNetworkFailure(r.stderr)) {
      throw new KernelInputError(
        "network",
        `downloading ${names.join(", ")} failed: cannot reach the Debian archive (${why}). ` +
          "Check the network or proxy and retry; completed cache entries keep working offline",
      );
    }
    if (/Unable to locate|Couldn't find any package|has no installation candidate/.test(r.stderr)) {
      throw new KernelInputError(
        "not-found",
        `the Debian archive no longer has ${names.join(", ")} for ${state.debArch} (${why}): ` +
          "old ABIs vanish; refresh the package lists (refresh: true) to get the current ABI",
      );
    }
    throw new KernelInputError(
      "command-failed",
      `apt-get download ${names.join(" ")} failed: ${why}`,
    );
  }
  const files: string[] = [];
  const listing: string[] = [];
  for await (const e of Deno.readDir(destDir)) if (e.name.endsWith(".deb")) listing.push(e.name);
  for (const name of names) {
    const hit = listing.find((f) => f.startsWith(`${name}_`));
    if (!hit || !(await exists(`${destDir}/${hit}`))) {
      throw new KernelInputError(
        "not-found",
        `apt-get download reported success but ${name}_*.deb is not in ${destDir}; retry`,
      );
    }
    files.push(`${destDir}/${hit}`);
  }
  return files;
}

/**
 * Result of {@link probeDebianArchive}.
 *
 * @example
 * ```ts
 * import type { ArchiveProbe } from "./apt.ts";
 * const p: ArchiveProbe = { reachable: false, detail: "Temporary failure resolving deb.debian.org" };
 * ```
 */
export interface ArchiveProbe {
  /** Whether `apt-get update` in the private state reached the archive. */
  reachable: boolean;
  /** What happened (the apt error when unreachable). */
  detail: string;
}

/**
 * Check whether the Debian archive is reachable right now: `apt-get update` in
 * the private state (which also refreshes the lists resolveKernel uses).
 * Never throws for network problems; other failures (no apt) do throw.
 *
 * @example
 * ```ts
 * import { probeDebianArchive } from "./apt.ts";
 * const p = await probeDebianArchive("/work/main/.cache/kernels", { debArch: "amd64" });
 * if (!p.reachable) console.log("offline:", p.detail);
 * ```
 */
export async function probeDebianArchive(
  cacheDir: string,
  opts: { debArch?: string; config?: Record<string, string> } = {},
): Promise<ArchiveProbe> {
  const state = await openAptState(cacheDir, opts.debArch ?? "amd64", { config: opts.config });
  try {
    let warning = "";
    const how = await updateLists(state, { maxAgeMs: 0, onProgress: (m) => (warning = m) });
    if (how === "stale") return { reachable: false, detail: warning };
    return { reachable: true, detail: `apt-get update in ${state.dir}: ${how}` };
  } catch (e) {
    if (e instanceof KernelInputError && e.code === "network") {
      return { reachable: false, detail: e.message };
    }
    throw e;
  }
}
