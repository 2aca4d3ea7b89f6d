// Test object 3: bpf-to-bpf calls. Two programs in the same section call the
// same static non-inlined function from .text; the second also passes a
// static callback to bpf_loop (an ld_imm64 of a function: BPF_PSEUDO_FUNC).
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

const volatile u32 target_pid = 0; // a thread id

struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, 4);
  __type(key, u32);
  __type(value, u64);
} slots SEC(".maps");

static __noinline int bump(u32 slot, u64 by) {
  u64 *v = bpf_map_lookup_elem(&slots, &slot);
  if (!v)
    return 0;
  __sync_fetch_and_add(v, by);
  return 1;
}

static __noinline int mine(void) {
  return (u32)bpf_get_current_pid_tgid() == target_pid;
}

static int loop_step(u32 index, void *ctx) {
  bump(2, 1);
  return 0;
}

SEC("tracepoint/syscalls/sys_enter_getppid")
int first(void *ctx) {
  if (!mine())
    return 0;
  return bump(0, 1) - 1;
}

SEC("tracepoint/syscalls/sys_enter_getppid")
int second(void *ctx) {
  if (!mine())
    return 0;
  bpf_loop(3, loop_step, NULL, 0);
  return bump(1, 10) - 1;
}

char LICENSE[] SEC("license") = "GPL";
