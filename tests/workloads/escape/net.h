/* The loopback address of the test's listener, for the network attempts. */
#ifndef FLAMEWARDEN_ESCAPE_NET_H
#define FLAMEWARDEN_ESCAPE_NET_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

__attribute__((unused)) static struct sockaddr_in loopback(long port) {
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((unsigned short)port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return addr;
}

#endif
