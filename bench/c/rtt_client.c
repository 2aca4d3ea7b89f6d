/*
 * rtt_client: a BPFd protocol client in C, used to time a daemon without the
 * overhead of a JavaScript client. It spawns the daemon command given after
 * "--" with its stdin and stdout on pipes (stderr inherited), sends one line at
 * a time, reads until END_BPFD_OUTPUT, and times each exchange with
 * clock_gettime(CLOCK_MONOTONIC). Results are printed as one JSON object.
 *
 * Usage:
 *   rtt_client rtt [--iterations N] [--warmup N] [--keys N] [--idle-ms N] [--raw] -- CMD ARGS...
 *   rtt_client startup [--runs N] [--idle-ms N] [--line TEXT] -- CMD ARGS...
 *
 * rtt:     GET_CPUS (timed: start-up), idle VmRSS, BPF_CREATE_MAP of a hash map
 *          (u32 -> u64, N keys), one BPF_UPDATE_ELEM per key, then warm-up and
 *          timed BPF_LOOKUP_ELEM round trips over the keys in turn (each answer
 *          is checked), idle VmRSS again, exit. Also reports the CPU time the
 *          daemon used during the timed part (all its threads, from
 *          /proc/<pid>/task/<tid>/schedstat; user/system split from
 *          /proc/<pid>/stat in clock ticks).
 * startup: N times: spawn, write the line (default GET_CPUS) at once, time the
 *          banner and the end of the first response, read idle VmRSS, exit.
 *
 * Build: gcc -O2 -o rtt_client rtt_client.c
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <dirent.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "b64.h"

static const char START[] = "START_BPFD_OUTPUT";
static const char END[] = "END_BPFD_OUTPUT";
static const char BANNER[] = "STARTED_BPFD";

static void die(const char *msg)
{
	fprintf(stderr, "rtt_client: %s\n", msg);
	exit(2);
}

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
	}
}

/* ------------------------------------------------------------------ child */

struct child {
	pid_t pid;
	int in;  /* its stdin (we write) */
	int out; /* its stdout (we read) */
	char *buf;
	size_t cap, start, end;
	int banner_seen;
};

static void spawn(char **argv, struct child *c)
{
	int pin[2], pout[2];
	if (pipe2(pin, O_CLOEXEC) < 0 || pipe2(pout, O_CLOEXEC) < 0)
		die("pipe failed");
	pid_t pid = fork();
	if (pid < 0)
		die("fork failed");
	if (pid == 0) {
		dup2(pin[0], 0);
		dup2(pout[1], 1);
		execvp(argv[0], argv);
		fprintf(stderr, "rtt_client: cannot exec %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	close(pin[0]);
	close(pout[1]);
	c->pid = pid;
	c->in = pin[1];
	c->out = pout[0];
	if (!c->buf) {
		c->cap = 1 << 16;
		c->buf = malloc(c->cap);
		if (!c->buf)
			die("out of memory");
	}
	c->start = c->end = 0;
	c->banner_seen = 0;
}

static void send_line(struct child *c, const char *line, size_t len)
{
	size_t off = 0;
	while (off < len) {
		ssize_t n = write(c->in, line + off, len - off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			die("write to the daemon failed (did it exit?)");
		off += (size_t)n;
	}
}

/* Next line (NUL-terminated, without its newline), valid until the next call; NULL on EOF. */
static char *read_line(struct child *c)
{
	for (;;) {
		char *nl = memchr(c->buf + c->start, '\n', c->end - c->start);
		if (nl) {
			char *l = c->buf + c->start;
			*nl = '\0';
			if (nl > l && nl[-1] == '\r')
				nl[-1] = '\0';
			c->start = (size_t)(nl + 1 - c->buf);
			return l;
		}
		if (c->start > 0) {
			memmove(c->buf, c->buf + c->start, c->end - c->start);
			c->end -= c->start;
			c->start = 0;
		}
		if (c->end == c->cap) {
			c->cap *= 2;
			c->buf = realloc(c->buf, c->cap);
			if (!c->buf)
				die("out of memory");
		}
		ssize_t n = read(c->out, c->buf + c->end, c->cap - c->end);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return NULL;
		c->end += (size_t)n;
	}
}

/*
 * Reads one framed response. Copies its first body line into first (may be
 * empty) and returns the number of body lines. *t_banner is set to the time
 * the banner was read, if it comes first. Dies on EOF.
 */
static int read_response(struct child *c, char *first, size_t cap, uint64_t *t_banner)
{
	char *l;
	for (;;) {
		if (!(l = read_line(c)))
			die("the daemon closed its stdout before responding");
		if (strcmp(l, START) == 0)
			break;
		if (strcmp(l, BANNER) == 0) {
			c->banner_seen = 1;
			if (t_banner)
				*t_banner = now_ns();
		}
	}
	int n = 0;
	first[0] = '\0';
	for (;;) {
		if (!(l = read_line(c)))
			die("the daemon closed its stdout inside a response");
		if (strcmp(l, END) == 0)
			return n;
		if (n == 0)
			snprintf(first, cap, "%s", l);
		n++;
	}
}

/* Sends exit, closes the pipes and reaps the child; returns its exit status (or -signal). */
static int finish(struct child *c)
{
	send_line(c, "exit\n", 5);
	close(c->in);
	int st = 0;
	while (waitpid(c->pid, &st, 0) < 0 && errno == EINTR) {
	}
	close(c->out);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -WTERMSIG(st);
}

/* A "Vm...:" field of /proc/<pid>/status in kB, or -1. */
static long proc_status_kb(pid_t pid, const char *field)
{
	char path[64], buf[256];
	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	FILE *f = fopen(path, "r");
	if (!f)
		return -1;
	long kb = -1;
	size_t fl = strlen(field);
	while (fgets(buf, sizeof(buf), f)) {
		if (strncmp(buf, field, fl) == 0 && buf[fl] == ':') {
			kb = strtol(buf + fl + 1, NULL, 10);
			break;
		}
	}
	fclose(f);
	return kb;
}

/* CPU time (ns) used so far by all threads of pid: the sum of their schedstat run times. */
static uint64_t proc_cpu_ns(pid_t pid)
{
	char path[96];
	snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
	DIR *d = opendir(path);
	if (!d)
		return 0;
	uint64_t sum = 0;
	struct dirent *e;
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/proc/%d/task/%.20s/schedstat", (int)pid, e->d_name);
		FILE *f = fopen(path, "r");
		if (!f)
			continue;
		unsigned long long run = 0;
		if (fscanf(f, "%llu", &run) == 1)
			sum += run;
		fclose(f);
	}
	closedir(d);
	return sum;
}

/* User and system CPU time of the whole process in clock ticks (/proc/<pid>/stat fields 14, 15). */
static void proc_times(pid_t pid, unsigned long *utime, unsigned long *stime)
{
	char path[64], buf[1024];
	*utime = *stime = 0;
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	FILE *f = fopen(path, "r");
	if (!f)
		return;
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	char *p = strrchr(buf, ')');
	if (!p)
		return;
	/* After ")": state(3) ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime */
	sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", utime, stime);
}

/* ------------------------------------------------------------------ helpers */


static void le32(uint32_t v, unsigned char *o)
{
	for (int i = 0; i < 4; i++)
		o[i] = (unsigned char)(v >> (8 * i));
}

static void le64(uint64_t v, unsigned char *o)
{
	for (int i = 0; i < 8; i++)
		o[i] = (unsigned char)(v >> (8 * i));
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of a sorted array. */
static uint64_t pct(const uint64_t *s, size_t n, double p)
{
	if (n == 0)
		return 0;
	size_t rank = (size_t)ceil(p / 100.0 * (double)n);
	if (rank < 1)
		rank = 1;
	if (rank > n)
		rank = n;
	return s[rank - 1];
}

static int ret_of(const char *line)
{
	const char *r = strstr(line, "ret=");
	return r ? atoi(r + 4) : -9999;
}

/* ------------------------------------------------------------------ modes */

struct opts {
	long iterations, warmup, keys, runs, idle_ms;
	int raw;
	const char *line;
	char **cmd;
};

static int mode_rtt(const struct opts *o)
{
	struct child c = { 0 };
	char first[512], line[256];
	uint64_t t0 = now_ns();
	spawn(o->cmd, &c);
	send_line(&c, "GET_CPUS\n", 9);
	read_response(&c, first, sizeof(first), NULL);
	uint64_t startup = now_ns() - t0;
	if (strncmp(first, "get_cpus: ret=0", 15) != 0)
		die("GET_CPUS failed");
	sleep_ms((int)o->idle_ms);
	long rss_start = proc_status_kb(c.pid, "VmRSS");

	int n = snprintf(line, sizeof(line), "BPF_CREATE_MAP 1 rtt_bench 4 8 %ld 0\n", o->keys);
	send_line(&c, line, (size_t)n);
	read_response(&c, first, sizeof(first), NULL);
	int fd = ret_of(first);
	if (fd < 0) {
		fprintf(stderr, "rtt_client: BPF_CREATE_MAP answered: %s\n", first);
		exit(2);
	}

	char **lookups = calloc((size_t)o->keys, sizeof(char *));
	char **expect = calloc((size_t)o->keys, sizeof(char *));
	size_t *lens = calloc((size_t)o->keys, sizeof(size_t));
	if (!lookups || !expect || !lens)
		die("out of memory");
	for (long k = 0; k < o->keys; k++) {
		unsigned char kb[4], vb[8];
		char k64[16], v64[16];
		le32((uint32_t)k, kb);
		le64(0x0123456789abcdefull ^ ((uint64_t)k * 0x9e3779b97f4a7c15ull), vb);
		b64encode(kb, 4, k64);
		b64encode(vb, 8, v64);
		n = snprintf(line, sizeof(line), "BPF_UPDATE_ELEM %d %s 4 %s 8 0\n", fd, k64, v64);
		send_line(&c, line, (size_t)n);
		read_response(&c, first, sizeof(first), NULL);
		if (ret_of(first) != 0) {
			fprintf(stderr, "rtt_client: BPF_UPDATE_ELEM answered: %s\n", first);
			exit(2);
		}
		n = snprintf(line, sizeof(line), "BPF_LOOKUP_ELEM %d %s 4 8\n", fd, k64);
		lookups[k] = strdup(line);
		lens[k] = (size_t)n;
		expect[k] = strdup(v64);
	}

	uint64_t *lat = malloc(sizeof(uint64_t) * (size_t)(o->iterations > 0 ? o->iterations : 1));
	if (!lat)
		die("out of memory");
	long errors = 0;
	uint64_t tw = now_ns();
	for (long i = 0; i < o->warmup; i++) {
		long k = i % o->keys;
		send_line(&c, lookups[k], lens[k]);
		read_response(&c, first, sizeof(first), NULL);
		if (strcmp(first, expect[k]) != 0)
			errors++;
	}
	uint64_t warm_ns = now_ns() - tw;
	unsigned long ut0, st0, ut1, st1;
	proc_times(c.pid, &ut0, &st0);
	uint64_t cpu0 = proc_cpu_ns(c.pid);
	uint64_t tm = now_ns();
	for (long i = 0; i < o->iterations; i++) {
		long k = i % o->keys;
		uint64_t a = now_ns();
		send_line(&c, lookups[k], lens[k]);
		read_response(&c, first, sizeof(first), NULL);
		lat[i] = now_ns() - a;
		if (strcmp(first, expect[k]) != 0)
			errors++;
	}
	uint64_t total_ns = now_ns() - tm;
	uint64_t cpu_ns = proc_cpu_ns(c.pid) - cpu0;
	proc_times(c.pid, &ut1, &st1);
	double tick_ns = 1e9 / (double)sysconf(_SC_CLK_TCK);
	sleep_ms((int)o->idle_ms);
	long rss_end = proc_status_kb(c.pid, "VmRSS");
	long hwm = proc_status_kb(c.pid, "VmHWM");
	int status = finish(&c);

	size_t N = (size_t)o->iterations;
	double sum = 0, sq = 0;
	for (size_t i = 0; i < N; i++)
		sum += (double)lat[i];
	double mean = N ? sum / (double)N : 0;
	for (size_t i = 0; i < N; i++)
		sq += ((double)lat[i] - mean) * ((double)lat[i] - mean);
	uint64_t *s = malloc(sizeof(uint64_t) * (N ? N : 1));
	if (!s)
		die("out of memory");
	memcpy(s, lat, sizeof(uint64_t) * N);
	qsort(s, N, sizeof(uint64_t), cmp_u64);

	printf("{\"mode\":\"rtt\",\"iterations\":%ld,\"warmup\":%ld,\"keys\":%ld,\"errors\":%ld,"
	       "\"exit_status\":%d,",
	       o->iterations, o->warmup, o->keys, errors, status);
	printf("\"min_ns\":%" PRIu64 ",\"p50_ns\":%" PRIu64 ",\"p90_ns\":%" PRIu64
	       ",\"p99_ns\":%" PRIu64 ",\"p999_ns\":%" PRIu64 ",\"max_ns\":%" PRIu64 ",",
	       N ? s[0] : 0, pct(s, N, 50), pct(s, N, 90), pct(s, N, 99), pct(s, N, 99.9),
	       N ? s[N - 1] : 0);
	printf("\"mean_ns\":%.1f,\"stdev_ns\":%.1f,\"total_ns\":%" PRIu64 ",\"warmup_ns\":%" PRIu64
	       ",\"startup_ns\":%" PRIu64 ",",
	       mean, N ? sqrt(sq / (double)N) : 0.0, total_ns, warm_ns, startup);
	printf("\"daemon_cpu_ns\":%" PRIu64 ",\"daemon_user_ns\":%.0f,\"daemon_sys_ns\":%.0f,",
	       cpu_ns, (double)(ut1 - ut0) * tick_ns, (double)(st1 - st0) * tick_ns);
	printf("\"rss_start_kb\":%ld,\"rss_end_kb\":%ld,\"hwm_kb\":%ld", rss_start, rss_end, hwm);
	if (o->raw) {
		printf(",\"latencies_ns\":[");
		for (size_t i = 0; i < N; i++)
			printf("%s%" PRIu64, i ? "," : "", lat[i]);
		printf("]");
	}
	printf("}\n");
	return errors ? 1 : 0;
}

static int mode_startup(const struct opts *o)
{
	struct child c = { 0 };
	char first[512];
	size_t ll = strlen(o->line);
	char *line = malloc(ll + 2);
	if (!line)
		die("out of memory");
	memcpy(line, o->line, ll);
	line[ll] = '\n';
	line[ll + 1] = '\0';
	long runs = o->runs;
	uint64_t *resp = calloc((size_t)runs, sizeof(uint64_t));
	uint64_t *banner = calloc((size_t)runs, sizeof(uint64_t));
	uint64_t *quit = calloc((size_t)runs, sizeof(uint64_t));
	long *rss = calloc((size_t)runs, sizeof(long));
	if (!resp || !banner || !quit || !rss)
		die("out of memory");
	int bad = 0;
	for (long r = 0; r < runs; r++) {
		uint64_t tb = 0;
		uint64_t t0 = now_ns();
		spawn(o->cmd, &c);
		send_line(&c, line, ll + 1);
		int lines = read_response(&c, first, sizeof(first), &tb);
		uint64_t t1 = now_ns();
		resp[r] = t1 - t0;
		banner[r] = tb ? tb - t0 : 0;
		if (lines == 0 || strstr(first, "ret=-") || strncmp(first, "Command not", 11) == 0)
			bad = 1;
		if (o->idle_ms > 0)
			sleep_ms((int)o->idle_ms);
		rss[r] = proc_status_kb(c.pid, "VmRSS");
		uint64_t tq = now_ns();
		int st = finish(&c);
		quit[r] = now_ns() - tq;
		if (st != 0)
			bad = 1;
	}
	printf("{\"mode\":\"startup\",\"runs\":%ld,\"ok\":%s,", runs, bad ? "false" : "true");
	const char *names[] = { "first_response_ns", "banner_ns", "exit_ns" };
	uint64_t *arrs[] = { resp, banner, quit };
	for (int a = 0; a < 3; a++) {
		printf("\"%s\":[", names[a]);
		for (long r = 0; r < runs; r++)
			printf("%s%" PRIu64, r ? "," : "", arrs[a][r]);
		printf("],");
	}
	printf("\"rss_kb\":[");
	for (long r = 0; r < runs; r++)
		printf("%s%ld", r ? "," : "", rss[r]);
	printf("]}\n");
	return bad;
}

/* ------------------------------------------------------------------ main */

static void usage(void)
{
	fprintf(stderr,
		"usage: rtt_client rtt [--iterations N] [--warmup N] [--keys N] [--idle-ms N] [--raw]"
		" -- CMD ARGS...\n"
		"       rtt_client startup [--runs N] [--idle-ms N] [--line TEXT] -- CMD ARGS...\n");
	exit(2);
}

static long num_arg(int argc, char **argv, int *i)
{
	if (*i + 1 >= argc)
		usage();
	char *end;
	long v = strtol(argv[++*i], &end, 10);
	if (*end || v < 0)
		usage();
	return v;
}

int main(int argc, char **argv)
{
	if (argc < 2)
		usage();
	struct opts o = { 20000, 2000, 64, 10, 200, 0, "GET_CPUS", NULL };
	int i = 2;
	for (; i < argc; i++) {
		if (strcmp(argv[i], "--") == 0) {
			o.cmd = argv + i + 1;
			break;
		} else if (strcmp(argv[i], "--iterations") == 0) {
			o.iterations = num_arg(argc, argv, &i);
		} else if (strcmp(argv[i], "--warmup") == 0) {
			o.warmup = num_arg(argc, argv, &i);
		} else if (strcmp(argv[i], "--keys") == 0) {
			o.keys = num_arg(argc, argv, &i);
		} else if (strcmp(argv[i], "--runs") == 0) {
			o.runs = num_arg(argc, argv, &i);
		} else if (strcmp(argv[i], "--idle-ms") == 0) {
			o.idle_ms = num_arg(argc, argv, &i);
		} else if (strcmp(argv[i], "--raw") == 0) {
			o.raw = 1;
		} else if (strcmp(argv[i], "--line") == 0 && i + 1 < argc) {
			o.line = argv[++i];
		} else {
			usage();
		}
	}
	if (!o.cmd || !o.cmd[0] || o.keys < 1 || o.runs < 1)
		usage();
	signal(SIGPIPE, SIG_IGN);
	if (strcmp(argv[1], "rtt") == 0)
		return mode_rtt(&o);
	if (strcmp(argv[1], "startup") == 0)
		return mode_startup(&o);
	usage();
	return 2;
}
