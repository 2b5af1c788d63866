/* net_udp PORT: sends a UDP datagram to 127.0.0.1:PORT. */
#include "escape.h"
#include "net.h"

int main(int argc, char **argv) {
    long port = num_arg(argc, argv, 1, -1);
    if (port <= 0 || port > 65535) setup_failed("usage: net_udp PORT", EINVAL);
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (fd < 0) blocked("socket(AF_INET, SOCK_DGRAM)", errno);
    struct sockaddr_in addr = loopback(port);
    if (sendto(fd, "udp", 3, 0, (struct sockaddr *)&addr, sizeof addr) != 3)
        blocked("sendto", errno);
    escaped("sent a datagram to 127.0.0.1:%ld", port);
}
