/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * funccount.h: the `counts` map funccount's BPF program fills and the host
 * tool dumps: key = the traced function's address (bpf_get_func_ip), value =
 * calls since the last dump. The host resolves addresses to names with
 * GET_KSYM_NAME on the target.
 */
#ifndef FUNCCOUNT_H
#define FUNCCOUNT_H

#define FUNCCOUNT_MAX_FUNCS 4096 /* entries of `counts`; the tool attaches at most 1000 */

#endif /* FUNCCOUNT_H */
