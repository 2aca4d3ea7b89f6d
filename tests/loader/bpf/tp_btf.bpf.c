// A BTF-enabled raw tracepoint (BPF_PROG_TYPE_TRACING). It loads only where
// the kernel allows tracing programs; on this test host (6.18) both load and attach work.
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

const volatile u32 target_pid = 0; // a thread id
u64 btf_hits;

SEC("tp_btf/sys_enter")
int BPF_PROG(btf_sys_enter, struct pt_regs *regs, long id) {
  if ((u32)bpf_get_current_pid_tgid() == target_pid)
    __sync_fetch_and_add(&btf_hits, 1);
  return 0;
}

char LICENSE[] SEC("license") = "GPL";
