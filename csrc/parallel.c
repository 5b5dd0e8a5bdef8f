#include "parallel.h"

#include <pthread.h>
#include <unistd.h>

typedef struct {
    nm_chunk_fn fn;
    void *ctx;
    size_t begin, end;
} nm_chunk;

static void *run_chunk(void *arg) {
    nm_chunk *chunk = arg;
    chunk->fn(chunk->ctx, chunk->begin, chunk->end);
    return NULL;
}

int nm_parallel_threads(size_t n, int requested) {
    long threads = requested;
    if (threads <= 0) {
        if (n < NM_PARALLEL_AUTO_MIN) return 1;
        threads = sysconf(_SC_NPROCESSORS_ONLN);
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

    nm_chunk chunks[NM_PARALLEL_MAX_THREADS];
    pthread_t ids[NM_PARALLEL_MAX_THREADS];
    int started[NM_PARALLEL_MAX_THREADS] = {0};
    for (int t = 0; t < threads; t++) {
        /* Even split; the first (n % threads) chunks take one extra item. */
        size_t base = n / (size_t)threads, extra = n % (size_t)threads, ut = (size_t)t;
        chunks[t].fn = fn;
        chunks[t].ctx = ctx;
        chunks[t].begin = ut * base + (ut < extra ? ut : extra);
        chunks[t].end = chunks[t].begin + base + (ut < extra ? 1 : 0);
    }
    /* Chunk 0 runs on the calling thread; a chunk whose thread fails to start
     * runs there too, so the batch is always complete. */
    for (int t = 1; t < threads; t++)
        started[t] = pthread_create(&ids[t], NULL, run_chunk, &chunks[t]) == 0;
    run_chunk(&chunks[0]);
    for (int t = 1; t < threads; t++) {
        if (started[t])
            pthread_join(ids[t], NULL);
        else
            run_chunk(&chunks[t]);
    }
}
