/* write_outside MARKER: creates the marker file (outside its work directory) and writes to it. */
#include "escape.h"

#include <fcntl.h>

int main(int argc, char **argv) {
    const char *marker = arg(argc, argv, 1, "MARKER");
    int fd = open(marker, O_WRONLY | O_CREAT | O_EXCL, 0644);
    if (fd < 0) blocked("create marker", errno);
    if (write(fd, "escaped\n", 8) != 8) setup_failed("write marker", errno);
    close(fd);
    escaped("wrote %s", marker);
}
