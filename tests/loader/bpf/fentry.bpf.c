// An fentry program (BPF_PROG_TYPE_TRACING, BPF_TRACE_FENTRY). Kernels built
// without CONFIG_FUNCTION_TRACER (like this test host's) refuse it with EPERM;
// the loader must say so and leave nothing behind.
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

u64 fentry_hits;

SEC("fentry/do_sys_openat2")
int BPF_PROG(fentry_openat2, int dfd, const char *filename) {
  __sync_fetch_and_add(&fentry_hits, 1);
  return 0;
}

char LICENSE[] SEC("license") = "GPL";
