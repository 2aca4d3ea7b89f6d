// Test object 1: a tracepoint program on syscalls:sys_enter_openat that
// counts opens per process in a BTF-defined hash map and sends one event per
// open to a ring buffer and to a perf event array.
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

#include "events.h"

struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, 1024);
  __type(key, u32);   // tgid
  __type(value, u64); // opens
} opens SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_RINGBUF);
  __uint(max_entries, 64 * 1024);
} ring SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
  __uint(key_size, sizeof(u32));
  __uint(value_size, sizeof(u32));
} perf SEC(".maps");

SEC("tracepoint/syscalls/sys_enter_openat")
int on_openat(struct trace_event_raw_sys_enter *ctx) {
  u32 tgid = bpf_get_current_pid_tgid() >> 32;
  u64 one = 1;
  u64 *n = bpf_map_lookup_elem(&opens, &tgid);
  if (n)
    __sync_fetch_and_add(n, 1);
  else
    bpf_map_update_elem(&opens, &tgid, &one, BPF_NOEXIST);

  struct open_event ev = {};
  ev.tgid = tgid;
  ev.pid = (u32)bpf_get_current_pid_tgid();
  bpf_get_current_comm(ev.comm, sizeof(ev.comm));
  bpf_probe_read_user_str(ev.filename, sizeof(ev.filename), (const char *)ctx->args[1]);
  bpf_ringbuf_output(&ring, &ev, sizeof(ev), 0);
  bpf_perf_event_output(ctx, &perf, BPF_F_CURRENT_CPU, &ev, sizeof(ev));
  return 0;
}

char LICENSE[] SEC("license") = "GPL";
