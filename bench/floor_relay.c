/* The floor of any relay in the path, for `join_storm.py --cluster-floor`: one process,
 * epoll, TCP_NODELAY, each chunk read on one socket written to the other; no HTTP, no
 * access check, no routing (it connects to one fixed upstream on accept).
 *
 *     cc -O2 -o floor_relay bench/floor_relay.c && ./floor_relay LISTEN_PORT UPSTREAM_PORT
 *
 * Loopback only; a benchmark tool, not a proxy (blocking connect and writes). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

static int peer[65536];

static void nodelay(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

static void watch(int ep, int fd) {
  struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
  epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: %s LISTEN_PORT UPSTREAM_PORT\n", argv[0]);
    return 2;
  }
  struct sockaddr_in here = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  struct sockaddr_in there = here;
  here.sin_port = htons(atoi(argv[1]));
  there.sin_port = htons(atoi(argv[2]));
  int listener = socket(AF_INET, SOCK_STREAM, 0), one = 1;
  setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind(listener, (struct sockaddr *)&here, sizeof here) || listen(listener, 512)) {
    perror("floor_relay");
    return 1;
  }
  int ep = epoll_create1(0);
  watch(ep, listener);
  struct epoll_event events[64];
  static char buffer[65536];
  for (;;) {
    int n = epoll_wait(ep, events, 64, -1);
    for (int i = 0; i < n; i++) {
      int fd = events[i].data.fd;
      if (fd == listener) {
        int client = accept(listener, NULL, NULL);
        if (client < 0 || client >= 65536) continue;
        int upstream = socket(AF_INET, SOCK_STREAM, 0);
        if (upstream >= 65536 || connect(upstream, (struct sockaddr *)&there, sizeof there)) {
          close(client);
          close(upstream);
          continue;
        }
        nodelay(client);
        nodelay(upstream);
        peer[client] = upstream;
        peer[upstream] = client;
        watch(ep, client);
        watch(ep, upstream);
        continue;
      }
      ssize_t got = read(fd, buffer, sizeof buffer);
      if (got <= 0) {
        close(peer[fd]);
        close(fd);
        continue;
      }
      for (ssize_t sent = 0, k; sent < got; sent += k)
        if ((k = write(peer[fd], buffer + sent, got - sent)) <= 0) break;
    }
  }
}
