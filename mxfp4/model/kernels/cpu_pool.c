/* The thread pool of the CPU kernels (cpu_pool.h). Decoding makes a few dozen short calls a token, and creating
 * threads for each cost ~0.1-0.4 ms here (more than a small product), so workers persist: they spin for SPIN_NS
 * after a job (the next call usually comes sooner), then sleep on a condition variable. One job at a time: a call
 * that finds the pool busy (another Python thread in here) runs its ranges on its own thread. */
#include "cpu_pool.h"

#include <pthread.h>
#include <stdint.h>
#include <time.h>

#define SPIN_NS 200000

typedef struct {
    int64_t begin, end;
} Range;

static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER; /* held by the caller that owns the pool */
static pthread_mutex_t wake_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wake = PTHREAD_COND_INITIALIZER;
static int pool_workers = 0;
static Range pool_ranges[POOL_MAX_THREADS];
static pool_fn pool_job;
static void *pool_context;
static int pool_count = 0;
static volatile int generation = 0;
static int remaining = 0; /* ranges of the current job not finished by workers (atomic builtins) */

static int64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

static void *worker(void *arg) {
    int index = (int)(intptr_t)arg; /* runs pool_ranges[index] of each job, when the job has that many */
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
            pool_job(pool_context, pool_ranges[index].begin, pool_ranges[index].end);
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
    int64_t step = (units + threads - 1) / threads;
    step = (step + multiple - 1) / multiple * multiple;
    Range ranges[POOL_MAX_THREADS];
    int n = 0;
    for (int64_t u = 0; u < units; u += step, n++) {
        ranges[n].begin = u;
        ranges[n].end = u + step < units ? u + step : units;
    }
    if (n <= 1 || pthread_mutex_trylock(&pool_lock) != 0) {
        for (int i = 0; i < n; i++) job(context, ranges[i].begin, ranges[i].end);
        return;
    }
    grow_pool(n - 1);
    int helpers = n - 1 < pool_workers ? n - 1 : pool_workers;
    for (int i = 0; i < n; i++) pool_ranges[i] = ranges[i];
    pool_job = job;
    pool_context = context;
    pool_count = helpers + 1;
    __atomic_store_n(&remaining, helpers, __ATOMIC_RELEASE);
    pthread_mutex_lock(&wake_lock);
    __atomic_fetch_add(&generation, 1, __ATOMIC_ACQ_REL);
    pthread_cond_broadcast(&wake);
    pthread_mutex_unlock(&wake_lock);
    job(context, ranges[0].begin, ranges[0].end);
    for (int i = helpers + 1; i < n; i++) job(context, ranges[i].begin, ranges[i].end); /* no worker for these */
    while (__atomic_load_n(&remaining, __ATOMIC_ACQUIRE) > 0) {
#if defined(__x86_64__)
        __builtin_ia32_pause();
#endif
    }
    pthread_mutex_unlock(&pool_lock);
}
