/*
 * lm_client: a real libmemcached client, for tests/serve.rs.
 *
 *   lm_client set|get HOST:PORT:WEIGHT...  < keys  > results
 *
 * Connects to the servers over TCP with MEMCACHED_BEHAVIOR_KETAMA_WEIGHTED (what kvlb's ring
 * reproduces), servers added in the order given with their weights, and for each key read
 * from stdin (one per line):
 *   set: stores the value "lm:<key>" and prints "STORED" or the error text;
 *   get: prints the value, or "-" on a miss (or the error text on an error).
 *
 * Exit status: 0 when every key was handled, 2 on bad usage, 3 when a server could not be
 * added or libmemcached could not be configured.
 */
#include <libmemcached/memcached.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
  if (argc < 3 || (strcmp(argv[1], "set") != 0 && strcmp(argv[1], "get") != 0)) {
    fprintf(stderr, "usage: lm_client set|get HOST:PORT:WEIGHT... < keys\n");
    return 2;
  }
  int set = strcmp(argv[1], "set") == 0;
  memcached_st *mc = memcached_create(NULL);
  if (!mc || memcached_behavior_set(mc, MEMCACHED_BEHAVIOR_KETAMA_WEIGHTED, 1) != MEMCACHED_SUCCESS) {
    fprintf(stderr, "lm_client: cannot configure libmemcached\n");
    return 3;
  }
  for (int i = 2; i < argc; i++) {
    char *spec = strdup(argv[i]);
    char *w = strrchr(spec, ':');
    if (!w) return 2;
    *w++ = '\0';
    char *p = strrchr(spec, ':');
    if (!p) return 2;
    *p++ = '\0';
    memcached_return_t rc = memcached_server_add_with_weight(
        mc, spec, (in_port_t) strtoul(p, NULL, 10), (uint32_t) strtoul(w, NULL, 10));
    if (rc != MEMCACHED_SUCCESS) {
      fprintf(stderr, "lm_client: cannot add %s: %s\n", argv[i], memcached_strerror(mc, rc));
      return 3;
    }
    free(spec);
  }
  char key[512];
  while (fgets(key, sizeof key, stdin)) {
    size_t n = strcspn(key, "\r\n");
    key[n] = '\0';
    if (n == 0) continue;
    if (set) {
      char value[600];
      int len = snprintf(value, sizeof value, "lm:%s", key);
      memcached_return_t rc = memcached_set(mc, key, n, value, (size_t) len, 0, 0);
      printf("%s\n", rc == MEMCACHED_SUCCESS ? "STORED" : memcached_strerror(mc, rc));
    } else {
      size_t len = 0;
      uint32_t flags = 0;
      memcached_return_t rc;
      char *v = memcached_get(mc, key, n, &len, &flags, &rc);
      if (v) {
        printf("%.*s\n", (int) len, v);
        free(v);
      } else if (rc == MEMCACHED_NOTFOUND) {
        printf("-\n");
      } else {
        printf("%s\n", memcached_strerror(mc, rc));
      }
    }
  }
  memcached_free(mc);
  return 0;
}
