/* The thread pool of the CPU kernels (cpu_pool.h). Decoding makes a few dozen short calls a token, and creating
 * threads for each cost ~0.1-0.4 ms here (more than a small product), so workers persist: they spin for SPIN_NS
 * after a job (the next call usually comes sooner), then sleep on a condition variable. A job is cut into
 * PIECES_PER_THREAD pieces a thread, which every thread takes from a shared counter until none is left: a core
 * slowed for a moment (this VM's neighbours) hands its share to the others instead of holding up the call
 * (measured on the wide shape: 58.4 / 63.7 / 62.5 ms a decode step against 63.2 / 64.8 / 64.2 with one fixed range
 * a thread, alternating). One job at a time: a call that finds the pool busy (another Python thread in here) runs
 * the whole job on its own thread. */
#include "cpu_pool.h"

#include <pthread.h>
#include <stdint.h>
#include <time.h>

#define SPIN_NS 200000
#define PIECES_PER_THREAD 4

typedef struct {
    int64_t begin, end;
} Range;

static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER; /* held by the caller that owns the pool */
static pthread_mutex_t wake_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wake = PTHREAD_COND_INITIALIZER;
static int pool_workers = 0;
static Range pieces[POOL_MAX_THREADS * PIECES_PER_THREAD];
static int piece_count = 0, next_piece = 0; /* next_piece: the shared counter (atomic builtins) */
static pool_fn pool_job;
static void *pool_context;
static int pool_count = 0; /* threads taking part in the current job, the caller's included */
static volatile int generation = 0;
static int remaining = 0; /* workers of the current job not finished (atomic builtins) */

static void take_pieces(void) {
    for (;;) {
        int i = __atomic_fetch_add(&next_piece, 1, __ATOMIC_ACQ_REL);
        if (i >= piece_count) return;
        pool_job(pool_context, pieces[i].begin, pieces[i].end);
    }
}

static int64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

static void *worker(void *arg) {
    int index = (int)(intptr_t)arg; /* takes part in each job that has more than `index` threads */
    int seen = 0;
    for (;;) {
        int64_t until = now_ns() + SPIN_NS;
        while (__atomic_load_n(&generation, __ATOMIC_ACQUIRE) == seen && now_ns() < until) {
#if defined(__x86_64__)
            __builtin_ia32_pause();
#endif
        }
        if (__atomic_load_n(&generation, __ATOMIC_ACQUIRE) == seen) {
            pthread_mutex_lock(&wake_lock);
            while (__atomic_load_n(&generation, __ATOMIC_ACQUIRE) == seen) pthread_cond_wait(&wake, &wake_lock);
            pthread_mutex_unlock(&wake_lock);
        }
        seen = __atomic_load_n(&generation, __ATOMIC_ACQUIRE);
        if (index < pool_count) {
            take_pieces();
            __atomic_fetch_sub(&remaining, 1, __ATOMIC_ACQ_REL);
        }
    }
    return NULL;
}

static void grow_pool(int workers) {
    while (pool_workers < workers) {
        pthread_t id;
        if (pthread_create(&id, NULL, worker, (void *)(intptr_t)(pool_workers + 1)) != 0) break;
        pthread_detach(id);
        pool_workers++;
    }
}

void pool_run(pool_fn job, void *context, int64_t units, int64_t multiple, int threads) {
    if (threads < 1) threads = 1;
    if (threads > POOL_MAX_THREADS) threads = POOL_MAX_THREADS;
    if (units <= 0) return;
    int64_t per_thread = (units + threads - 1) / threads;
    int helpers_wanted = (int)((units + per_thread - 1) / per_thread) - 1; /* no thread without a range's worth */
    if (helpers_wanted == 0 || pthread_mutex_trylock(&pool_lock) != 0) {
        job(context, 0, units);
        return;
    }
    grow_pool(helpers_wanted);
    int helpers = helpers_wanted < pool_workers ? helpers_wanted : pool_workers;
    int64_t step = (units + (helpers + 1) * PIECES_PER_THREAD - 1) / ((helpers + 1) * PIECES_PER_THREAD);
    step = (step + multiple - 1) / multiple * multiple;
    int n = 0;
    for (int64_t u = 0; u < units; u += step, n++) {
        pieces[n].begin = u;
        pieces[n].end = u + step < units ? u + step : units;
    }
    piece_count = n;
    __atomic_store_n(&next_piece, 0, __ATOMIC_RELEASE);
    pool_job = job;
    pool_context = context;
    pool_count = helpers + 1;
    __atomic_store_n(&remaining, helpers, __ATOMIC_RELEASE);
    pthread_mutex_lock(&wake_lock);
    __atomic_fetch_add(&generation, 1, __ATOMIC_ACQ_REL);
    pthread_cond_broadcast(&wake);
    pthread_mutex_unlock(&wake_lock);
    take_pieces();
    while (__atomic_load_n(&remaining, __ATOMIC_ACQUIRE) > 0) {
#if defined(__x86_64__)
        __builtin_ia32_pause();
#endif
    }
    pthread_mutex_unlock(&pool_lock);
}
