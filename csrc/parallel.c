#if defined(__linux__) && !defined(_GNU_SOURCE)
#define _GNU_SOURCE /* sched_getaffinity */
#endif
#include "parallel.h"

#include <pthread.h>
#include <unistd.h>
#ifdef __linux__
#include <sched.h>
#endif

#include "thresholds.h"

/* Workers take blocks of `grain` items from a shared counter until none are left,
 * so a thread that is slowed down (other load on the box, dearer items) simply
 * ends up doing fewer blocks. */
typedef struct {
    nm_chunk_fn fn;
    void *ctx;
    size_t n, grain;
    size_t next; /* atomic: first item not yet taken */
} nm_work;

static void *run_worker(void *arg) {
    nm_work *work = arg;
    for (;;) {
        size_t begin = __atomic_fetch_add(&work->next, work->grain, __ATOMIC_RELAXED);
        if (begin >= work->n) return NULL;
        size_t end = work->n - begin < work->grain ? work->n : begin + work->grain;
        work->fn(work->ctx, begin, end);
    }
}

/* The CPUs this process may run on: a vendor pinned to one core (taskset, a cpuset)
 * gains nothing from a second thread, which only costs its start and the switches. */
static long usable_cpus(void) {
#ifdef __linux__
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
        int count = CPU_COUNT(&set);
        if (count > 0) return count;
    }
#endif
    return sysconf(_SC_NPROCESSORS_ONLN);
}

int nm_parallel_threads(size_t n, int requested) {
    long threads = requested;
    if (threads <= 0) {
        if (n < NM_PARALLEL_MIN_ITEMS) return 1;
        threads = usable_cpus();
    }
    if (threads > NM_PARALLEL_MAX_THREADS) threads = NM_PARALLEL_MAX_THREADS;
    if ((size_t)threads > n) threads = (long)n;
    return threads < 1 ? 1 : (int)threads;
}

void nm_parallel_for(size_t n, int threads, nm_chunk_fn fn, void *ctx) {
    if (threads <= 1 || n <= 1) {
        fn(ctx, 0, n);
        return;
    }
    if (threads > NM_PARALLEL_MAX_THREADS) threads = NM_PARALLEL_MAX_THREADS;
    if ((size_t)threads > n) threads = (int)n;

    /* About eight blocks per thread: enough to even out, few enough to stay cheap. */
    size_t grain = n / ((size_t)threads * 8);
    if (grain < 1) grain = 1;
    if (grain > 32) grain = 32;
    nm_work work = {fn, ctx, n, grain, 0};
    pthread_t ids[NM_PARALLEL_MAX_THREADS];
    int started[NM_PARALLEL_MAX_THREADS] = {0};
    /* The calling thread works too; if a thread fails to start, the others
     * just take its blocks, so the batch is always complete. */
    for (int t = 1; t < threads; t++)
        started[t] = pthread_create(&ids[t], NULL, run_worker, &work) == 0;
    run_worker(&work);
    for (int t = 1; t < threads; t++)
        if (started[t]) pthread_join(ids[t], NULL);
}
