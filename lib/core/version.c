#include "core/internal.h"

#define MML_STR2(x) #x
#define MML_STR(x) MML_STR2(x)

const char *mml_version_string(void)
{
    return MML_STR(MML_VERSION_MAJOR) "." MML_STR(MML_VERSION_MINOR) "." MML_STR(MML_VERSION_PATCH);
}

uint32_t mml_version_number(void) { return (uint32_t)MML_VERSION_NUMBER; }
