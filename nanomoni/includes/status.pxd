cdef extern from "status.h" nogil:
    ctypedef enum nm_status:
        NM_OK
        NM_ERR_ALG
        NM_ERR_RANGE
        NM_ERR_NO_MEMORY
        NM_ERR_INIT
        NM_ERR_KEY_FORMAT
        NM_ERR_KEY_TYPE
        NM_ERR_KEY_INVALID
        NM_ERR_KIND
        NM_ERR_CRYPTO
        NM_STATUS_COUNT

    const char *nm_status_message(int status)
