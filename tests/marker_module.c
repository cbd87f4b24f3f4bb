/*
 * marker_module.c — a shared object that, when loaded, creates the file named by
 * $CMK_TEST_MARKER. tests/cli/test_store_data.sh writes its path into a store's key
 * identifier (module-path=) and checks that no cmkstore command ever loads it.
 */
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

__attribute__((constructor)) static void leave_marker(void)
{
    const char *path = getenv("CMK_TEST_MARKER");
    int fd;

    if (!path || !*path)
        return;
    fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    if (fd >= 0)
        close(fd);
}
