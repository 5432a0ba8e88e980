#include "core/internal.h"

const char *mml_status_str(int status)
{
    switch (status) {
    case MML_OK: return "success";
    case MML_EINVAL: return "invalid argument";
    case MML_ENOMEM: return "out of memory";
    case MML_ERANGE: return "index out of range";
    case MML_ESHAPE: return "shape mismatch";
    case MML_ENONFINITE: return "non-finite value";
    case MML_EIO: return "input/output error";
    case MML_EPARSE: return "malformed input";
    case MML_ESTATE: return "invalid state for this call";
    case MML_EVERSION: return "unsupported version";
    case MML_EEXIST: return "already exists";
    case MML_ENOTFOUND: return "not found";
    case MML_ECANCELED: return "canceled";
    case MML_ECALLBACK: return "callback failed";
    case MML_EUNSUPPORTED: return "not supported";
    case MML_EFORMAT: return "not a model file";
    case MML_EGRADIENT: return "gradient mismatch";
    case MML_ETRUNCATED: return "truncated input";
    case MML_ECHECKSUM: return "checksum mismatch";
    case MML_ECORRUPT: return "corrupt file";
    case MML_ESECTION: return "unknown required section";
    default: return "unknown status";
    }
}
