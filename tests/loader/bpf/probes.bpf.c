// Test object: a kprobe (refused on kernels without CONFIG_KPROBES, like this
// test host), a uprobe and a uretprobe on libc's getppid (named by library
// and symbol, resolved at attach time), and a perf_event sampling program.
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

const volatile u32 target_pid = 0; // a thread id
u64 kprobe_hits, uprobe_hits, uretprobe_hits, samples;

static __always_inline int mine(void) {
  return (u32)bpf_get_current_pid_tgid() == target_pid;
}

SEC("kprobe/do_sys_openat2")
int kp_openat2(struct pt_regs *ctx) {
  if (mine())
    __sync_fetch_and_add(&kprobe_hits, 1);
  return 0;
}

SEC("uprobe/libc.so.6:getppid")
int up_getppid(struct pt_regs *ctx) {
  if (mine())
    __sync_fetch_and_add(&uprobe_hits, 1);
  return 0;
}

SEC("uretprobe/libc.so.6:getppid")
int urp_getppid(struct pt_regs *ctx) {
  if (mine())
    __sync_fetch_and_add(&uretprobe_hits, 1);
  return 0;
}

SEC("perf_event")
int on_sample(struct bpf_perf_event_data *ctx) {
  if (mine())
    __sync_fetch_and_add(&samples, 1);
  return 0;
}

char LICENSE[] SEC("license") = "GPL";
