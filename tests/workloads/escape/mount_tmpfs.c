/* mount_tmpfs: mounts a tmpfs on `mnt` in its working directory. On success it creates a file in
 * it, keeps the mount for 300 ms (so a watcher outside can see it), unmounts again (nothing is
 * left mounted) and checks that the file went with it. */
#include "escape.h"

#include <sys/mount.h>
#include <sys/stat.h>

int main(void) {
    if (mkdir("mnt", 0755) != 0 && errno != EEXIST) setup_failed("mkdir mnt", errno);
    if (mount("flamewarden-escape", "mnt", "tmpfs", 0, "size=1m") != 0)
        blocked("mount tmpfs", errno);
    FILE *f = fopen("mnt/inside-the-tmpfs", "w");
    int created = f != NULL;
    if (f) fclose(f);
    usleep(300 * 1000);
    if (umount2("mnt", MNT_DETACH) != 0) setup_failed("umount mnt", errno);
    if (!created) setup_failed("create a file in the tmpfs", errno);
    if (access("mnt/inside-the-tmpfs", F_OK) == 0)
        setup_failed("the tmpfs was not mounted", EEXIST);
    escaped("mounted a tmpfs on mnt");
}
