/**
 * `deno task replay`: record bpfd sessions to transcripts, play them against a runtime, or serve
 * them in place of one. Run with `--help` for the usage.
 *
 * @example
 * ```ts
 * import { main } from "./main.ts";
 * const status = await main(["play", "session.txt", "--against", "local"]);
 * console.log(status); // 0 when the runtime answered as recorded
 * ```
 * @module
 */

import { parseArgs } from "../../artifacts/cli.ts";
import { parseScenario, runScenario } from "./scenario.ts";
import { connectRemote, transportFor } from "../transport/remote.ts";
import { playTranscript } from "./play.ts";
import { serveTranscript } from "./serve.ts";
import { readTranscript, Recorder } from "./transcript.ts";

/**
 * The usage text.
 *
 * @example
 * ```ts
 * import { USAGE } from "./main.ts";
 * console.log(USAGE);
 * ```
 */
export const USAGE = `Usage: deno task replay <command> [options]

Commands:
  record --out FILE [--remote SPEC] [--scenario FILE.scn] [--abbreviate]
      Without --scenario: a recording proxy. It speaks bpfd on stdin/stdout, forwards every
      line to the runtime named by --remote (default: local) and writes the session to FILE
      when the client ends it. Use it as the bpfd command of any client, e.g.
        --remote 'local,bpfd=deno task replay record --out s.txt --remote ssh:root@board'
      With --scenario: runs a scenario file (the transcript scenarios' syntax) and records it.
      --abbreviate shortens lines over 300 characters (readable, but not replayable).
  play FILE --against SPEC [--timeout MS]
      Plays the transcript against a runtime and reports the first divergence, after
      normalising fds, pids and the fields marked with '# replay …' notes. Exit 1 if it diverged.
  serve FILE
      Acts as a runtime on stdin/stdout that answers from the transcript. Exit 1 (and the
      divergence on stderr) when the client strays from it.

Remote specs (SPEC):
  local[,bpfd=CMD]
  ssh:[user@]host[:port][,key=PATH][,opt=SSH_OPTION]…[,bpfd=REMOTE_CMD]
  adb:[serial][,su][,bpfd=PATH]
  qemu:NAME            (a hook registered by the VM harness)
  replay:FILE          (a transcript served as a fake runtime)

Options:
  -h, --help           this text
`;

const enc = new TextEncoder();

function fail(msg: string): number {
  console.error(`replay: ${msg}`);
  return 2;
}

/** Splits a byte stream into lines (without `\n`), calling `f` for each. */
function lineSplitter(f: (line: string) => void): { push(b: Uint8Array): void; end(): void } {
  const dec = new TextDecoder();
  let buf = "";
  return {
    push(b) {
      buf += dec.decode(b, { stream: true });
      let nl: number;
      while ((nl = buf.indexOf("\n")) >= 0) {
        const l = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        f(l.endsWith("\r") ? l.slice(0, -1) : l);
      }
    },
    end() {
      if (buf !== "") f(buf);
      buf = "";
    },
  };
}

async function recordProxy(spec: string, rec: Recorder, out: string): Promise<number> {
  const channel = await transportFor(spec, {
    onStderr: (t) => Deno.stderr.writeSync(enc.encode(t)),
  }).open();
  const down = lineSplitter((l) => rec.onTraffic("<", l));
  const up = lineSplitter((l) => rec.onTraffic(">", l));
  const toRuntime = channel.writable.getWriter();
  const fromRuntime = (async () => {
    const w = Deno.stdout.writable.getWriter();
    try {
      for await (const chunk of channel.readable) {
        down.push(chunk);
        await w.write(chunk);
      }
    } catch { /* the far side went away */ }
    down.end();
    await w.close().catch(() => {});
  })();
  try {
    for await (const chunk of Deno.stdin.readable) {
      up.push(chunk);
      await toRuntime.write(chunk);
    }
  } catch { /* runtime gone: its output ends too */ }
  up.end();
  await toRuntime.close().catch(() => {});
  await fromRuntime;
  const exit = channel.exited ? await channel.exited : null;
  rec.finish(exit?.code ?? null);
  await rec.save(out);
  await channel.dispose?.();
  return exit?.code ?? 0;
}

/**
 * Runs the CLI with `args`; returns the exit status.
 *
 * @example
 * ```ts
 * import { main } from "./main.ts";
 * await main(["--help"]); // 0
 * ```
 */
export async function main(args: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args,
      allowPositionals: true,
      options: {
        help: { type: "boolean", short: "h" },
        out: { type: "string" },
        remote: { type: "string" },
        against: { type: "string" },
        scenario: { type: "string" },
        timeout: { type: "string" },
        abbreviate: { type: "boolean" },
      },
    });
  } catch (e) {
    return fail(`${(e as Error).message} (see --help)`);
  }
  const { values, positionals } = parsed;
  if (values.help || positionals.length === 0) {
    (values.help ? console.log : console.error)(USAGE);
    return values.help ? 0 : 2;
  }
  const [cmd, ...rest] = positionals;
  switch (cmd) {
    case "record": {
      if (!values.out) return fail("record needs --out FILE");
      const spec = values.remote ?? "local";
      const rec = new Recorder({ remote: spec, abbreviate: values.abbreviate });
      if (!values.scenario) return await recordProxy(spec, rec, values.out);
      const steps = parseScenario(await Deno.readTextFile(values.scenario));
      const client = await connectRemote(spec, { onTraffic: rec.onTraffic });
      const run = await runScenario(steps, client);
      rec.finish(run.exitStatus);
      await rec.save(values.out);
      console.error(`replay: recorded ${values.out}${run.error ? ` (error: ${run.error})` : ""}`);
      return run.error ? 1 : 0;
    }
    case "play": {
      if (rest.length !== 1) return fail("play needs one transcript file");
      if (!values.against) return fail("play needs --against SPEC (e.g. local)");
      const timeoutMs = values.timeout ? Number(values.timeout) : 10_000;
      if (!(timeoutMs > 0)) return fail(`bad --timeout ${values.timeout}`);
      const t = await readTranscript(rest[0]);
      const client = await connectRemote(values.against, { timeoutMs });
      const report = await playTranscript(t, client, { timeoutMs });
      await client.close();
      if (report.ok) {
        console.log(
          `identical: ${report.sent} commands, ${report.compared} lines (${report.elapsedMs} ms)`,
        );
        return 0;
      }
      console.log(report.divergence!.message);
      return 1;
    }
    case "serve": {
      if (rest.length !== 1) return fail("serve needs one transcript file");
      const server = serveTranscript(await readTranscript(rest[0]));
      const pumpOut = server.readable.pipeTo(Deno.stdout.writable).catch(() => {});
      const pumpIn = Deno.stdin.readable.pipeTo(server.writable).catch(() => {});
      const report = await server.done;
      await Promise.race([pumpIn, pumpOut]);
      if (report.ok) return 0;
      console.error(`replay serve: ${report.divergence!.message}`);
      return 1;
    }
  }
  return fail(`unknown command ${JSON.stringify(cmd)} (record, play, serve; see --help)`);
}

if (import.meta.main) {
  try {
    Deno.exit(await main(Deno.args));
  } catch (e) {
    console.error(`replay: ${(e as Error).message}`);
    Deno.exit(1);
  }
}
