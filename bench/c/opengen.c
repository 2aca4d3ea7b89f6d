/*
 * opengen: a paced source of open() events for bench/events.ts.
 *
 *   opengen RATE SECONDS      (RATE 0 = as fast as possible)
 *
 * Waits for one line on stdin (the benchmark sends it once tracing is set up),
 * then calls openat() on a path that does not exist RATE times a second for
 * SECONDS, and prints "<opens> <elapsed_ns>" on stdout.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static long long now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int main(int argc, char **argv)
{
	char line[16];
	long long rate, dur, start, end, t, n = 0;

	if (argc != 3) {
		fprintf(stderr, "usage: opengen RATE SECONDS\n");
		return 2;
	}
	rate = atoll(argv[1]);
	dur = (long long)(atof(argv[2]) * 1e9);
	if (!fgets(line, sizeof(line), stdin))
		return 1;
	start = now_ns();
	end = start + dur;
	for (;;) {
		int i;

		for (i = 0; i < 16; i++, n++)
			openat(AT_FDCWD, "/nonexistent/bpfpack-bench", O_RDONLY);
		t = now_ns();
		if (t >= end)
			break;
		if (rate > 0) {
			/* Ahead of schedule: sleep until the next event is due. */
			long long due = start + n * 1000000000LL / rate;
			if (due > t) {
				struct timespec d = { (due - t) / 1000000000LL, (due - t) % 1000000000LL };
				nanosleep(&d, NULL);
			}
		}
	}
	printf("%lld %lld\n", n, now_ns() - start);
	return 0;
}
