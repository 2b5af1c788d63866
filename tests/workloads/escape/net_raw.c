/* net_raw PORT: opens a raw IP socket (protocol UDP) and hand-crafts a UDP datagram to
 * 127.0.0.1:PORT with it, so the test's UDP receiver sees whether the raw socket worked. */
#include "escape.h"
#include "net.h"

#include <netinet/udp.h>

int main(int argc, char **argv) {
    long port = num_arg(argc, argv, 1, -1);
    if (port <= 0 || port > 65535) setup_failed("usage: net_raw PORT", EINVAL);
    int fd = socket(AF_INET, SOCK_RAW, IPPROTO_UDP);
    if (fd < 0) blocked("socket(AF_INET, SOCK_RAW, IPPROTO_UDP)", errno);
    struct {
        struct udphdr udp;
        char payload[3];
    } __attribute__((packed)) packet;
    memset(&packet, 0, sizeof packet);
    packet.udp.source = htons(9);
    packet.udp.dest = htons((unsigned short)port);
    packet.udp.len = htons(sizeof packet);
    packet.udp.check = 0; /* no checksum: allowed for UDP over IPv4 */
    memcpy(packet.payload, "raw", 3);
    struct sockaddr_in addr = loopback(port);
    if (sendto(fd, &packet, sizeof packet, 0, (struct sockaddr *)&addr, sizeof addr) < 0)
        blocked("sendto on a raw socket", errno);
    escaped("sent a hand-made UDP datagram to 127.0.0.1:%ld over a raw socket", port);
}
