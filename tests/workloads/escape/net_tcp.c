/* net_tcp PORT: connects to 127.0.0.1:PORT over TCP and sends a line. */
#include "escape.h"
#include "net.h"

int main(int argc, char **argv) {
    long port = num_arg(argc, argv, 1, -1);
    if (port <= 0 || port > 65535) setup_failed("usage: net_tcp PORT", EINVAL);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) blocked("socket(AF_INET, SOCK_STREAM)", errno);
    struct sockaddr_in addr = loopback(port);
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) blocked("connect", errno);
    if (write(fd, "hello from the sandbox\n", 23) != 23) blocked("write", errno);
    escaped("connected to 127.0.0.1:%ld", port);
}
