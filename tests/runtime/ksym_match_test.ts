// KSYM_MATCH (docs/protocol.md §5.9): globs, the two name sources and the kprobe blacklist on
// fixture files, then the command on this kernel through the runtime and the typed client.
import assert from "../support/assert.ts";
import { errnoOf } from "../../tools/client/raw.ts";
import { BpfdClient } from "../../tools/client/client.ts";
import { startBpfd } from "../support/bpfd.ts";
import { globToRegExp, matchKernelFunctions } from "../../runtime/symbols/ksym_match.ts";
import { SysError } from "../../runtime/kernel/errno.ts";

Deno.test("KSYM_MATCH globs: * ? [..] [!..], literal dots, malformed patterns refused", () => {
  const t = (g: string, s: string) => globToRegExp(g).test(s);
  assert.ok(t("vfs_*", "vfs_read"));
  assert.ok(!t("vfs_*", "do_vfs_read"), "anchored at the start");
  assert.ok(!t("vfs_read", "vfs_readv"), "anchored at the end");
  assert.ok(t("vfs_rea?", "vfs_read") && !t("vfs_rea?", "vfs_rea"));
  assert.ok(t("vfs_[rw]*", "vfs_write") && !t("vfs_[rw]*", "vfs_open"));
  assert.ok(t("vfs_[!r]*", "vfs_write") && !t("vfs_[!r]*", "vfs_read"));
  assert.ok(t("ext[0-9]_*", "ext4_file_open"));
  assert.ok(t("foo.isra.0", "foo.isra.0") && !t("foo.isra.0", "fooXisraX0"), ". is literal");
  assert.ok(!t("a+b", "aab") && t("a+b", "a+b"), "regex characters are literal");
  for (const bad of ["", "x[", "x[]", "x[-a]", "x[a b]", "y".repeat(513)]) {
    assert.throws(() => globToRegExp(bad), SysError, JSON.stringify(bad));
  }
});

Deno.test("KSYM_MATCH sources: filter functions first, kallsyms text symbols else; blacklist", async () => {
  const dir = await Deno.makeTempDir({ prefix: "bpfpack-ksym-" });
  try {
    const filter = `${dir}/available_filter_functions`;
    await Deno.writeTextFile(
      filter,
      "vfs_read\nvfs_write\nvfs_read\next4_read [ext4]\nvfs_readv\nvfs_iter_read\n",
    );
    const kallsyms = `${dir}/kallsyms`;
    await Deno.writeTextFile(
      kallsyms,
      [
        "ffffffff81000000 T vfs_read",
        "ffffffff81000000 t __pfx_vfs_readv",
        "ffffffff81000010 t vfs_readv",
        "ffffffff81000020 t vfs_read_cold.cold",
        "ffffffff81000030 D vfs_read_data",
        "ffffffff81000040 t vfs_read_mod\t[mod]",
        "",
      ].join("\n"),
    );
    const blacklist = `${dir}/blacklist`;
    await Deno.writeTextFile(blacklist, "0xffffffff81000010-0xffffffff81000020\tvfs_readv\n");
    const none = `${dir}/absent`;

    const f = matchKernelFunctions("vfs_read*", 10, { filterFunctions: filter, blacklist: none });
    assert.deepEqual(f, {
      source: filter,
      matched: 2,
      excluded: 0,
      names: ["vfs_read", "vfs_readv"],
    });
    const m = matchKernelFunctions("*_read", 10, { filterFunctions: filter, blacklist: none });
    assert.deepEqual(m.names, ["ext4_read", "vfs_iter_read", "vfs_read"], "module names too");

    const b = matchKernelFunctions("vfs_read*", 10, { filterFunctions: filter, blacklist });
    assert.deepEqual([b.matched, b.excluded, b.names], [1, 1, ["vfs_read"]]);

    const k = matchKernelFunctions("vfs_read*", 10, {
      filterFunctions: none,
      kallsyms,
      blacklist: none,
    });
    assert.equal(k.source, kallsyms);
    assert.deepEqual(k.names, ["vfs_read", "vfs_read_mod", "vfs_readv"], "text symbols only");

    const cut = matchKernelFunctions("vfs_*", 1, { filterFunctions: filter, blacklist: none });
    assert.deepEqual([cut.matched, cut.names], [4, ["vfs_iter_read"]], "max cuts, matched counts");
    assert.equal(matchKernelFunctions("vfs_*", 0, { filterFunctions: filter }).names.length, 0);

    assert.throws(
      () => matchKernelFunctions("x*", 1, { filterFunctions: none, kallsyms: none }),
      /cannot read/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("KSYM_MATCH on this kernel: vfs_read* through the runtime and the typed client", async () => {
  const c = startBpfd();
  try {
    const h = await c.send("HELLO ksym-test");
    assert.ok(h.some((l) => l.startsWith("commands=") && l.includes("KSYM_MATCH")));
    const r = await c.send("KSYM_MATCH vfs_read* 50");
    const n = Number(/^ksym_match: ret=(\d+)$/.exec(r[0])?.[1]);
    assert.ok(n >= 2, r.join("\n"));
    const meta = /^source=(\S+) matched=(\d+) excluded=(\d+)$/.exec(r[1]);
    assert.ok(meta, r[1]);
    assert.match(meta[1], /available_filter_functions$|^\/proc\/kallsyms$/);
    const names = r.slice(2);
    assert.equal(names.length, n);
    assert.ok(names.includes("vfs_read"), names.join(" "));
    assert.ok(names.every((x) => x.startsWith("vfs_read")));
    assert.deepEqual(names, [...names].sort(), "sorted");

    const counted = await c.send("KSYM_MATCH vfs_* 0");
    assert.equal(counted[0], "ksym_match: ret=0");
    assert.ok(Number(/matched=(\d+)/.exec(counted[1])?.[1]) > n, counted[1]);
    const deflt = await c.send("KSYM_MATCH vfs_read");
    assert.deepEqual(deflt.slice(2), ["vfs_read"], "no wildcard: the name itself");
    assert.deepEqual(await c.send("KSYM_MATCH no_such_function_xyz*"), [
      "ksym_match: ret=0",
      `source=${meta[1]} matched=0 excluded=0`,
    ]);
    assert.equal(errnoOf(await c.send("KSYM_MATCH vfs_[ 5")), 22);
    assert.equal(errnoOf(await c.send("KSYM_MATCH vfs_* 100001")), 22);
    assert.match((await c.send("KSYM_MATCH"))[0], /Command not recognized/);

    const client = new BpfdClient(c);
    await client.hello();
    const m = await client.ksymMatch("vfs_write*", 5);
    assert.ok(m.names.includes("vfs_write") && m.matched >= m.names.length, JSON.stringify(m));
  } finally {
    await c.close();
  }
});
