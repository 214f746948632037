/* A persistent thread pool shared by the CPU kernels of this extension (_cpu_gemv.c, _cpu_attention.c): one
 * pool, so two kernels never have two sets of spinning workers on the same cores. */
#ifndef MXFP4_CPU_POOL_H
#define MXFP4_CPU_POOL_H

#include <stdint.h>

#define POOL_MAX_THREADS 64

typedef void (*pool_fn)(void *context, int64_t begin, int64_t end);

/* job(context, begin, end) over [0, units) in pieces, each a multiple of `multiple` long (but the last), taken by
 * up to `threads` threads, the caller's among them. Returns when every piece is done. */
void pool_run(pool_fn job, void *context, int64_t units, int64_t multiple, int threads);

#endif
