/* Run a loop body over [0, n) on several threads, in blocks taken on demand. */
#ifndef NANOMONI_PARALLEL_H
#define NANOMONI_PARALLEL_H

#include <stddef.h>

/* Processes items [begin, end) of a batch; ctx is the caller's batch state. */
typedef void (*nm_chunk_fn)(void *ctx, size_t begin, size_t end);

#define NM_PARALLEL_MAX_THREADS 64

/* How many threads a batch of n items gets: requested > 0 is honoured (but never
 * more threads than items, nor more than NM_PARALLEL_MAX_THREADS); 0 picks 1
 * below NM_PARALLEL_MIN_ITEMS (thresholds.h) and the number of online cores
 * from there on. */
int nm_parallel_threads(size_t n, int requested);

/* Calls fn over disjoint blocks covering [0, n) from `threads` threads (the
 * calling thread is one of them). Falls back to fewer threads if a thread cannot
 * be created; the whole range is always processed exactly once. */
void nm_parallel_for(size_t n, int threads, nm_chunk_fn fn, void *ctx);

#endif
