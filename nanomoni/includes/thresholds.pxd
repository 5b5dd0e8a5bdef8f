cdef extern from "thresholds.h" nogil:
    enum:
        NM_NOGIL_HASHES
        NM_NOGIL_BYTES
        NM_PARALLEL_MIN_HASHES
        NM_PARALLEL_MIN_ITEMS
        NM_INLINE_HASHES
