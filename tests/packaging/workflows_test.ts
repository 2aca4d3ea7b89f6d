// The GitHub workflows, checked offline as far as possible: they parse, their jobs are well
// formed, what they run exists (deno tasks, scripts), actions are pinned, secrets never reach
// a command line or the log, and their matrices match the kernel matrix and compile targets.
import assert from "../support/assert.ts";
import { parseYaml } from "./yaml.ts";
import { ARCHES } from "../../scripts/offline.ts";
import { parseTarget, TARGETS } from "../../scripts/compile.ts";

const ROOT = new URL("../../", import.meta.url).pathname.replace(/\/$/, "");
const DIR = `${ROOT}/.github/workflows`;

type Obj = Record<string, unknown>;
interface Step extends Obj {
  name?: string;
  uses?: string;
  run?: string;
  env?: Record<string, string>;
  with?: Obj;
  shell?: string;
}
interface Job extends Obj {
  "runs-on"?: unknown;
  steps?: Step[];
  needs?: string | string[];
  strategy?: { matrix?: Obj };
  env?: Record<string, string>;
  permissions?: Obj;
  if?: string;
}
interface Workflow extends Obj {
  name?: string;
  on?: unknown;
  permissions?: Obj;
  jobs: Record<string, Job>;
}

const files = [...Deno.readDirSync(DIR)]
  .filter((e) => e.isFile && /\.ya?ml$/.test(e.name))
  .map((e) => e.name)
  .sort();
const workflows = new Map<string, Workflow>(
  files.map((f) => [f, parseYaml(Deno.readTextFileSync(`${DIR}/${f}`), f) as Workflow]),
);

function* steps(): Generator<[string, string, Step]> {
  for (const [f, wf] of workflows) {
    for (const [id, job] of Object.entries(wf.jobs)) {
      for (const s of job.steps ?? []) yield [f, id, s];
    }
  }
}

const where = (f: string, job: string, s: Step) => `${f} ${job}: step ${s.name ?? s.uses ?? "?"}`;

Deno.test("workflows: test, bundles and release exist and parse as strict YAML", () => {
  for (const f of ["test.yml", "bundles.yml", "release.yml"]) assert.ok(files.includes(f), f);
  for (const [f, wf] of workflows) {
    assert.equal(typeof wf.name, "string", `${f}: name`);
    assert.ok(wf.on && typeof wf.on === "object", `${f}: on`);
    assert.ok(wf.jobs && Object.keys(wf.jobs).length > 0, `${f}: jobs`);
  }
});

Deno.test("workflows: every job has runs-on, a timeout and steps; every step uses or runs; needs exist", () => {
  for (const [f, wf] of workflows) {
    for (const [id, job] of Object.entries(wf.jobs)) {
      assert.ok(/^[A-Za-z_][\w-]*$/.test(id), `${f}: job id ${id}`);
      assert.ok(job["runs-on"], `${f} ${id}: runs-on`);
      assert.equal(typeof job["timeout-minutes"], "number", `${f} ${id}: timeout-minutes`);
      assert.ok(Array.isArray(job.steps) && job.steps.length > 0, `${f} ${id}: steps`);
      for (const s of job.steps) {
        assert.ok(("uses" in s) !== ("run" in s), `${where(f, id, s)}: exactly one of uses/run`);
      }
      const needs = job.needs === undefined ? [] : [job.needs].flat();
      for (const n of needs) {
        assert.ok(n in wf.jobs && n !== id, `${f} ${id}: needs ${n}, which is not a job`);
      }
    }
  }
});

Deno.test("workflows: ${{ matrix.X }} names a key of the job's matrix", () => {
  for (const [f, wf] of workflows) {
    for (const [id, job] of Object.entries(wf.jobs)) {
      const m = job.strategy?.matrix ?? {};
      const keys = new Set(Object.keys(m).filter((k) => k !== "include" && k !== "exclude"));
      for (const e of (m.include as Obj[] | undefined) ?? []) {
        for (const k of Object.keys(e)) keys.add(k);
      }
      for (const [, k] of JSON.stringify(job).matchAll(/\bmatrix\.([\w-]+)/g)) {
        assert.ok(keys.has(k), `${f} ${id}: matrix.${k} is not in its matrix`);
      }
    }
  }
});

Deno.test("workflows: actions are pinned (@vN or a commit sha); Deno comes from the npm pin", () => {
  for (const [f, id, s] of steps()) {
    if (s.uses === undefined) continue;
    assert.match(
      s.uses,
      /^(\.\/.+|[\w.-]+\/[\w./-]+@(v\d+(\.\d+){0,2}|[0-9a-f]{40})|docker:\/\/.+(:[\w.-]+|@sha256:[0-9a-f]{64}))$/,
      `${where(f, id, s)}: pin ${s.uses}`,
    );
    assert.doesNotMatch(s.uses, /setup-deno/, `${f}: Deno is pinned with npm (scripts/deno)`);
  }
  const runs = [...steps()].map(([, , s]) => s.run ?? "").join("\n");
  assert.doesNotMatch(runs, /dl\.deno\.land|deno\.land\/install|curl[^\n]*deno/);
  // Every deno invoked is the npm-pinned one.
  for (const [f, id, s] of steps()) {
    for (const m of (s.run ?? "").matchAll(/(\S*)\bdeno (task|run|test|compile)\b/g)) {
      assert.equal(m[1], "scripts/deno/node_modules/.bin/", `${where(f, id, s)}: ${m[0]}`);
    }
  }
});

Deno.test("workflows: every deno task exists in deno.json; every script path exists", async () => {
  const tasks = Object.keys(JSON.parse(await Deno.readTextFile(`${ROOT}/deno.json`)).tasks);
  const named = new Set<string>();
  for (const [f, id, s] of steps()) {
    for (const [, t] of (s.run ?? "").matchAll(/\bdeno task ([\w:-]+)/g)) {
      assert.ok(tasks.includes(t), `${where(f, id, s)}: deno task ${t} is not in deno.json`);
      named.add(t);
    }
  }
  assert.deepEqual([...named].sort(), ["build", "compile"]);
  const text = files.map((f) => Deno.readTextFileSync(`${DIR}/${f}`)).join("\n");
  const paths = new Set(
    [...text.matchAll(
      /(?<![\w$/.-])(?:\.ci|scripts|compiler|tools|runtime|artifacts|tests)\/[\w./*-]*/g,
    )]
      .map((m) => m[0].split("*")[0].split("/node_modules/")[0].replace(/[/.]+$/, "")),
  );
  for (const p of [".ci/run", "scripts/setup.sh", "scripts/offline.ts", "compiler/kernels.json"]) {
    assert.ok(paths.has(p), `${p} in ${[...paths].join(" ")}`);
  }
  for (const p of paths) {
    await Deno.stat(`${ROOT}/${p}`).catch(() => assert.fail(`${p} is referenced but missing`));
  }
});

Deno.test("workflows: secrets only through env, never in a command line or echoed; least privilege", () => {
  for (const [f, wf] of workflows) {
    assert.deepEqual(wf.permissions, { contents: "read" }, `${f}: top-level permissions`);
    for (const [id, job] of Object.entries(wf.jobs)) {
      for (const s of job.steps ?? []) {
        const run = s.run ?? "";
        assert.doesNotMatch(run, /\bsecrets\./, `${where(f, id, s)}: secrets in run (use env)`);
        assert.doesNotMatch(
          run,
          /\$\{\{\s*github\.event\./,
          `${where(f, id, s)}: event data in run`,
        );
        const secretVars = Object.entries({ ...job.env, ...s.env })
          .filter(([, v]) => /\bsecrets\./.test(String(v)))
          .map(([k]) => k);
        if (secretVars.length === 0) continue;
        assert.doesNotMatch(run, /\bset -[a-z]*x/, `${where(f, id, s)}: set -x with a secret`);
        for (const line of run.split("\n")) {
          for (const v of secretVars) {
            const uses = new RegExp(`\\$\\{?${v}\\b`).test(line);
            assert.ok(
              !(uses && /\b(echo|printf|cat|tee)\b/.test(line)),
              `${where(f, id, s)}: ${v} may be printed: ${line.trim()}`,
            );
            assert.ok(
              !(uses && /--(password|token|creds|dest-creds)[ =]/.test(line)),
              `${where(f, id, s)}: ${v} on a command line: ${line.trim()}`,
            );
          }
        }
      }
      const writes = Object.entries(job.permissions ?? {}).filter(([, v]) => v === "write");
      for (const [scope] of writes) {
        assert.ok(
          (scope === "packages" && f === "bundles.yml" && id === "publish") ||
            (scope === "contents" && f === "release.yml" && id === "release"),
          `${f} ${id}: ${scope}: write`,
        );
      }
    }
  }
});

Deno.test("workflows: run scripts pass bash -n", async () => {
  for (const [f, id, s] of steps()) {
    if (s.run === undefined) continue;
    const script = s.run.replace(/\$\{\{[^}]*\}\}/g, "X");
    const r = await new Deno.Command("bash", {
      args: ["-n", "-c", script],
      stdout: "null",
      stderr: "piped",
    }).output();
    assert.ok(r.success, `${where(f, id, s)}: ${new TextDecoder().decode(r.stderr)}`);
  }
});

Deno.test("test.yml: runs .ci/run as CI does, as root in a privileged Debian bookworm container", () => {
  const wf = workflows.get("test.yml")!;
  const jobs = Object.values(wf.jobs);
  assert.equal(jobs.length, 1);
  const job = jobs[0];
  const c = job.container as { image: string; options: string };
  assert.equal(c.image, "debian:bookworm");
  assert.match(c.options, /--privileged/);
  assert.match(c.options, /--pid=host/);
  assert.equal(job["timeout-minutes"], 90);
  assert.ok(job.steps!.some((s) => s.run?.trim() === "bash .ci/run"), "runs bash .ci/run");
  assert.ok(job.steps!.some((s) => /mount -t tracefs/.test(s.run ?? "")), "mounts tracefs");
  const ci = Deno.readTextFileSync(`${ROOT}/.ci/run`);
  assert.match(ci, /npm test/);
});

Deno.test("bundles.yml: one build job per compiler/kernels.json entry; artifacts; publish gated on push to main", async () => {
  const wf = workflows.get("bundles.yml")!;
  const kernels = JSON.parse(await Deno.readTextFile(`${ROOT}/compiler/kernels.json`)).kernels as {
    kernel: string;
    modes: string[];
  }[];
  const build = wf.jobs.build;
  const include = build.strategy!.matrix!.include as {
    kernel: string;
    modes: string;
    set: string;
  }[];
  assert.deepEqual(
    include.map((e) => ({ kernel: e.kernel, modes: e.modes.split(",") })),
    kernels.map((k) => ({ kernel: k.kernel, modes: k.modes })),
    "the matrix must equal compiler/kernels.json (edit both)",
  );
  for (const e of include) assert.equal(e.set, e.kernel.replaceAll(":", "-"));
  assert.equal(new Set(include.map((e) => e.set)).size, include.length);
  const buildRun = build.steps!.map((s) => s.run ?? "").join("\n");
  assert.match(
    buildRun,
    /deno task build --kernel "\$KERNEL" --mode "\$MODES" --out "out\/bundles\/\$SET"/,
  );
  const upload = build.steps!.find((s) => s.uses?.startsWith("actions/upload-artifact@"));
  assert.equal(upload?.with?.name, "bundles-${{ matrix.set }}");
  const publish = wf.jobs.publish;
  assert.deepEqual(publish.needs, "build");
  assert.match(publish.if!, /github\.event_name == 'push'/);
  assert.match(publish.if!, /refs\/heads\/main/);
  assert.match(publish.if!, /fork/);
  assert.deepEqual(publish.permissions, { contents: "read", packages: "write" });
  const push = publish.steps!.map((s) => s.run ?? "").join("\n");
  assert.match(push, /skopeo copy [^\n]*"oci-archive:\$tar" "docker:\/\/\$repo\/\$tool:\$tag"/);
  assert.match(push, /--password-stdin <<<"\$REGISTRY_TOKEN"/);
  assert.equal(typeof (wf.on as Obj).pull_request, "object", "PRs build (and never publish)");
});

Deno.test("release.yml: on tags, deno task compile per supported target plus the offline artifact", () => {
  const wf = workflows.get("release.yml")!;
  assert.deepEqual((wf.on as { push: { tags: string[] } }).push.tags, ["v*"]);
  const compile = wf.jobs.compile;
  const arches = compile.strategy!.matrix!.arch as string[];
  assert.deepEqual(
    [...arches].sort(),
    [...ARCHES].sort(),
    "the targets scripts/compile.ts supports",
  );
  for (const a of arches) assert.equal(parseTarget(a), a);
  for (const a of arches) assert.ok(TARGETS[a as keyof typeof TARGETS]);
  const run = compile.steps!.map((s) => s.run ?? "").join("\n");
  assert.match(run, /deno task compile --target "\$ARCH" --out dist/);
  assert.match(run, /scripts\/offline\.ts --arch "\$ARCH"/);
  assert.match(run, /npm ci --prefix scripts\/deno/);
  const release = wf.jobs.release;
  assert.equal(release.needs, "compile");
  assert.deepEqual(release.permissions, { contents: "write" });
  assert.match(
    release.steps!.map((s) => s.run ?? "").join("\n"),
    /gh release create "\$TAG" dist\/\*/,
  );
});
