// SPDX-License-Identifier: GPL-2.0
/*
 * The syscount tests' helper: `helper N [M]` waits for one byte on stdin (so
 * the test can start tracing it first), then makes N getppid(2) calls and M
 * close(-1) calls (each fails with EBADF), and exits. Build it as
 * `bpfpack-schelp` so its comm is known.
 */
#include <stdlib.h>
#include <unistd.h>
#include <sys/syscall.h>

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 0, m = argc > 2 ? atol(argv[2]) : 0;
	char go;

	if (read(0, &go, 1) < 0)
		return 1;
	for (long i = 0; i < n; i++)
		syscall(SYS_getppid);
	for (long i = 0; i < m; i++)
		syscall(SYS_close, -1);
	return 0;
}
