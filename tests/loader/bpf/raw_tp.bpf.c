// Test object 7: a raw tracepoint program on sys_enter counting getppid(2)
// calls (args[1] is the syscall number) of one thread.
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

const volatile u32 target_pid = 0; // a thread id
const volatile long syscall_nr = -1;
u64 hits;

SEC("raw_tracepoint/sys_enter")
int count_sys_enter(struct bpf_raw_tracepoint_args *ctx) {
  if ((u32)bpf_get_current_pid_tgid() != target_pid)
    return 0;
  if ((long)ctx->args[1] == syscall_nr)
    __sync_fetch_and_add(&hits, 1);
  return 0;
}

char LICENSE[] SEC("license") = "GPL";
