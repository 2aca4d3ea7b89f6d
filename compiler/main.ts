/**
 * `deno task build`: BPF objects for a kernel matrix (or one kernel), packed
 * as one OCI bundle per tool. Progress on stderr; `--json` puts a summary on
 * stdout. Exit status: 0 ok, 1 build failure (diagnostics on stderr), 2 usage.
 *
 * @example
 * ```sh
 * deno task build --kernel running --tool opensnoop --json
 * deno task build                     # the matrix in compiler/kernels.json
 * ```
 * @module
 */

import { z } from "zod";
import { parseArgs } from "../artifacts/cli.ts";
import {
  absPath,
  buildAll,
  type BuildJob,
  type BuiltObject,
  detectToolchain,
  findTools,
  loadTool,
  type Mode,
  MODES,
  type ToolSource,
} from "./build.ts";
import { writeBundles } from "./bundle.ts";
import {
  type KernelInputs,
  type KernelSpec,
  kernelSpecString,
  parseKernelSpec,
  resolveKernelInputs,
} from "./kernel_inputs.ts";

const CHECKOUT = absPath(new URL("..", import.meta.url).pathname);

const HELP = `deno task build — compile bpfpack tools into BPF object bundles

Usage: deno task build [options]

Builds every tool (tools/<name>/<name>.bpf.c) for every kernel of a matrix in
the listed modes, checks each (arch, mode, kernel) unit really targets its
arch, and writes one OCI bundle per tool: <out>/<tool>.oci/ and
<out>/<tool>.oci.tar (copy them anywhere with skopeo/oras/umoci).

Options:
  --matrix FILE        kernel matrix (default compiler/kernels.json)
  --kernel SPEC        build for these kernels instead of the matrix (repeat or
                       comma-separate): running | debian:<6.1|6.12>:<arch> |
                       tree:<path>:<arch> | btf:<path>:<arch>[:<release>]
                       (arch: x86_64/amd64, aarch64/arm64)
  --tool LIST          tools, comma-separated (default: all under tools/)
  --mode LIST          headers,core (default: the matrix's modes; for --kernel
                       what the kernel provides: headers+core for debian,
                       headers for tree, core for btf and running)
  --out DIR            bundle directory (default out/bundles)
  --cache DIR          build cache (default .cache/build)
  --kernel-cache DIR   kernel inputs cache (default: the kernels module's)
  --root DIR           checkout whose tools/ to build (default: this one)
  --jobs N             parallel compiles (default: number of CPUs)
  --no-cache           recompile even when a cached object exists
  --json               print a JSON summary on stdout
  --quiet              no progress lines on stderr
  -h, --help           this text

Exit status: 0 built, 1 build failure (compiler diagnostics on stderr),
2 usage error.`;

const MatrixSchema = z.object({
  kernels: z.array(z.object({
    kernel: z.string().min(1),
    modes: z.array(z.enum(["headers", "core"])).min(1),
  })).min(1),
});

/** Raised for bad command-line input (exit status 2). */
class UsageError extends Error {}
/** Raised for a failed build step (exit status 1). */
class FailedError extends Error {}

/** Default modes of a kernel given with --kernel. */
function defaultModes(spec: KernelSpec): Mode[] {
  switch (spec.kind) {
    case "debian":
      return ["headers", "core"];
    case "tree":
      return ["headers"];
    default:
      return ["core"];
  }
}

function list(values: string[] | undefined): string[] {
  return (values ?? []).flatMap((v) => v.split(",")).map((s) => s.trim()).filter(Boolean);
}

interface Plan {
  kernels: { spec: KernelSpec; modes: Mode[] }[];
  tools: ToolSource[];
}

async function plan(values: Record<string, unknown>, root: string): Promise<Plan> {
  const modeFilter = list(values.mode as string[] | undefined);
  for (const m of modeFilter) {
    if (!MODES.includes(m as Mode)) {
      throw new UsageError(`unknown mode "${m}": use headers or core`);
    }
  }
  let entries: { spec: KernelSpec; modes: Mode[] }[];
  const kernelArgs = list(values.kernel as string[] | undefined);
  try {
    if (kernelArgs.length > 0) {
      if (values.matrix !== undefined) throw new UsageError("give --matrix or --kernel, not both");
      entries = kernelArgs.map((k) => {
        const spec = parseKernelSpec(k);
        return { spec, modes: modeFilter.length ? modeFilter as Mode[] : defaultModes(spec) };
      });
    } else {
      const file = (values.matrix as string | undefined) ?? `${CHECKOUT}/compiler/kernels.json`;
      let raw: unknown;
      try {
        raw = JSON.parse(await Deno.readTextFile(file));
      } catch (e) {
        throw new UsageError(`cannot read the matrix ${file}: ${(e as Error).message}`);
      }
      const m = MatrixSchema.safeParse(raw);
      if (!m.success) {
        throw new UsageError(
          `bad matrix ${file}: ${
            m.error.issues.map((i) => `${i.path.join(".")}: ${i.message}`).join("; ")
          }`,
        );
      }
      entries = m.data.kernels.map((k) => ({
        spec: parseKernelSpec(k.kernel),
        modes: k.modes.filter((x) => !modeFilter.length || modeFilter.includes(x)),
      })).filter((e) => e.modes.length > 0);
    }
  } catch (e) {
    if (e instanceof UsageError) throw e;
    throw new UsageError((e as Error).message);
  }
  // Merge duplicate kernels.
  const merged = new Map<string, { spec: KernelSpec; modes: Mode[] }>();
  for (const e of entries) {
    const key = kernelSpecString(e.spec);
    const have = merged.get(key);
    if (have) have.modes = MODES.filter((m) => have.modes.includes(m) || e.modes.includes(m));
    else merged.set(key, { spec: e.spec, modes: MODES.filter((m) => e.modes.includes(m)) });
  }
  if (merged.size === 0) throw new UsageError("nothing to build: no kernel has a requested mode");

  const names = list(values.tool as string[] | undefined);
  const toolNames = names.length ? [...new Set(names)] : await findTools(root);
  if (toolNames.length === 0) throw new FailedError(`no tools under ${root}/tools`);
  const tools: ToolSource[] = [];
  for (const n of toolNames) {
    try {
      tools.push(await loadTool(root, n));
    } catch (e) {
      throw new FailedError((e as Error).message);
    }
  }
  return { kernels: [...merged.values()], tools };
}

/** One line of the JSON summary. */
function summaryOf(o: BuiltObject) {
  return {
    tool: o.job.tool.name,
    arch: o.entry.arch,
    mode: o.entry.mode,
    release: o.entry.kernel.release,
    name: o.entry.name,
    digest: o.entry.digest,
    size: o.entry.size,
    cached: o.cached,
    seconds: Number(o.seconds.toFixed(3)),
  };
}

/**
 * Runs the CLI with `args`; resolves with the exit status.
 *
 * @example
 * ```ts
 * import { main } from "./main.ts";
 * const status = await main(["--kernel", "running", "--tool", "opensnoop", "--quiet"]);
 * console.log(status); // 0
 * ```
 */
export async function main(args: string[]): Promise<number> {
  const t0 = performance.now();
  let values: Record<string, unknown>;
  try {
    ({ values } = parseArgs({
      args,
      allowPositionals: false,
      options: {
        matrix: { type: "string" },
        kernel: { type: "string", multiple: true },
        tool: { type: "string", multiple: true },
        mode: { type: "string", multiple: true },
        out: { type: "string" },
        cache: { type: "string" },
        "kernel-cache": { type: "string" },
        root: { type: "string" },
        jobs: { type: "string" },
        "no-cache": { type: "boolean" },
        json: { type: "boolean" },
        quiet: { type: "boolean" },
        help: { type: "boolean", short: "h" },
      },
    }));
  } catch (e) {
    console.error(`build: ${(e as Error).message}\nRun with --help for usage.`);
    return 2;
  }
  if (values.help) {
    console.log(HELP);
    return 0;
  }
  const json = values.json === true;
  const say = values.quiet ? () => {} : (msg: string) => console.error(`build: ${msg}`);
  const fail = (status: number, message: string) => {
    console.error(`build: error: ${message}`);
    if (json) console.log(JSON.stringify({ ok: false, error: message }, null, 2));
    return status;
  };
  let jobs: number | undefined;
  if (values.jobs !== undefined) {
    jobs = Number(values.jobs);
    if (!Number.isInteger(jobs) || jobs < 1) return fail(2, `--jobs needs a positive integer`);
  }
  const root = absPath((values.root as string | undefined) ?? CHECKOUT);

  let p: Plan;
  try {
    p = await plan(values, root);
  } catch (e) {
    if (e instanceof UsageError) {
      console.error(`build: ${e.message}\nRun with --help for usage.`);
      if (json) console.log(JSON.stringify({ ok: false, error: e.message }, null, 2));
      return 2;
    }
    return fail(1, (e as Error).message);
  }

  // Kernel inputs (may download; cached by the kernels module).
  const resolved = await Promise.allSettled(p.kernels.map(async (k) => {
    const name = kernelSpecString(k.spec);
    const s0 = performance.now();
    say(`resolving kernel ${name} (${k.modes.join(", ")})…`);
    const want = [
      ...(k.modes.includes("headers") ? ["headers" as const] : []),
      ...(k.modes.includes("core") ? ["btf" as const] : []),
    ];
    const inputs = await resolveKernelInputs(k.spec, {
      cacheDir: values["kernel-cache"] as string | undefined,
      want,
      onProgress: (m) => say(`${name}: ${m}`),
    });
    say(
      `kernel ${name}: ${inputs.release} (${inputs.arch}, ${inputs.source}) in ${
        ((performance.now() - s0) / 1000).toFixed(2)
      } s`,
    );
    return { inputs, modes: k.modes };
  }));
  const kernelErrors = resolved.flatMap((r, i) =>
    r.status === "rejected"
      ? [`kernel ${kernelSpecString(p.kernels[i].spec)}: ${(r.reason as Error).message}`]
      : []
  );
  if (kernelErrors.length) return fail(1, kernelErrors.join("\n"));
  const kernels = resolved.map((r) =>
    (r as PromiseFulfilledResult<{ inputs: KernelInputs; modes: Mode[] }>).value
  );

  let toolchain;
  try {
    toolchain = await detectToolchain();
  } catch (e) {
    return fail(1, (e as Error).message);
  }
  const buildJobs: BuildJob[] = [];
  for (const tool of p.tools) {
    for (const k of kernels) {
      for (const mode of k.modes) buildJobs.push({ tool, kernel: k.inputs, mode });
    }
  }
  say(
    `${buildJobs.length} objects: ${
      p.tools.map((t) => t.name).join(", ")
    } × ${kernels.length} kernels`,
  );
  const result = await buildAll(buildJobs, {
    root,
    cacheDir: (values.cache as string | undefined) ?? `${CHECKOUT}/.cache/build`,
    jobs,
    toolchain,
    useCache: values["no-cache"] !== true,
    onProgress: say,
  });
  if (result.failures.length) {
    for (const f of result.failures) console.error(`build: error: ${f.message}`);
    const msg = `${result.failures.length} failure(s); ${result.objects.length} of ` +
      `${buildJobs.length} objects built; no bundles written`;
    console.error(`build: ${msg}`);
    if (json) {
      console.log(JSON.stringify(
        { ok: false, error: msg, failures: result.failures.map((f) => f.message) },
        null,
        2,
      ));
    }
    return 1;
  }
  const out = absPath((values.out as string | undefined) ?? "out/bundles");
  const written = await writeBundles(out, result.objects, root);
  const seconds = (performance.now() - t0) / 1000;
  for (const b of written) say(`wrote ${b.dir} and ${b.tar} (${b.objects} objects, ${b.version})`);
  const cached = result.objects.filter((o) => o.cached).length;
  say(`done in ${seconds.toFixed(2)} s (${result.objects.length} objects, ${cached} cached)`);
  if (json) {
    console.log(JSON.stringify(
      {
        ok: true,
        seconds: Number(seconds.toFixed(3)),
        objects: result.objects.map(summaryOf),
        bundles: written,
      },
      null,
      2,
    ));
  }
  return 0;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
