/* Every "is this work big enough to move?" threshold of the core, its binding
 * (_core.pyx) and the services, in one place; the binding exports them all.
 *
 * The costs they balance (PERFORMANCE.md): a hash step 50-100 ns, a signature
 * 25-70 µs, handing the GIL over about 1 µs, starting a thread tens of µs,
 * and an event loop that should not stall for much more than a millisecond. */
#ifndef NANOMONI_THRESHOLDS_H
#define NANOMONI_THRESHOLDS_H

/* The binding releases the GIL for hashing from this many hash steps (about
 * 15-25 µs) or this many input bytes. Signature calls always release it: one
 * signature costs far more than the hand-over. */
#define NM_NOGIL_HASHES 256
#define NM_NOGIL_BYTES 65536

/* A PayWord batch or one Merkle tree level is spread over all cores only from
 * this many hash steps: below it, starting threads costs about as much as the
 * hashing it would share out. */
#define NM_PARALLEL_MIN_HASHES 16384

/* A signature batch with threads = 0 uses all cores from this many items. */
#define NM_PARALLEL_MIN_ITEMS 64

/* A service verifies a PayWord payment of up to this many hash steps (about
 * 1 ms) on its event loop; longer walks go to a worker thread. */
#define NM_INLINE_HASHES 16384

#endif
