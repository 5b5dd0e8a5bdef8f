#include "status.h"

const char *nm_status_message(int status) {
    switch (status) {
    case NM_OK: return "ok";
    case NM_ERR_ALG: return "unknown hash alg";
    case NM_ERR_RANGE: return "count or size out of range for the native core";
    case NM_ERR_NO_MEMORY: return "out of memory";
    case NM_ERR_INIT: return "cannot initialise libsodium / libsecp256k1";
    case NM_ERR_KEY_FORMAT: return "not a DER PKCS#8 private key";
    case NM_ERR_KEY_TYPE:
        return "unsupported private key type (expected P-256, secp256k1 or Ed25519)";
    case NM_ERR_KEY_INVALID: return "the key material is not valid for its curve";
    case NM_ERR_KIND: return "unknown key kind";
    case NM_ERR_CRYPTO: return "the crypto library failed";
    default: return "unknown native core status";
    }
}
