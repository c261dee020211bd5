/*
 * ketama_place: where does libmemcached put each key?
 *
 * Test harness for tests/ketama_libmemcached.rs (compiled by that test with `cc ... -lmemcached`).
 *
 *   ketama_place [-e HOST:PORT]... HOST:PORT:WEIGHT...  < keys  > placements
 *
 * Configures a memcached_st the way kvlb's ring is specified: MEMCACHED_BEHAVIOR_KETAMA_WEIGHTED
 * (distribution CONSISTENT_WEIGHTED, key hash and distribution hash MD5), servers added in the
 * order given with their weights. Reads one key per line from stdin and prints, per key, the
 * "host:port" that memcached_server_by_key() returns ("-" when it returns none).
 *
 * -e HOST:PORT ejects that server the way libmemcached does it at run time: with
 * REMOVE_FAILED_SERVERS on and a failure limit of 1, it issues GETs for a key that maps to the
 * server until libmemcached has marked it dead and rebuilt the continuum. The server must refuse
 * TCP connections (a closed port on 127.0.0.1). Nothing else is ever contacted.
 *
 * Exit status: 0 on success, 2 on bad usage, 3 when a server could not be added or ejected.
 */
#include <libmemcached/memcached.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_SERVERS 256

static int split_host_port(char *spec, char **host, unsigned *port, unsigned *weight) {
  char *last = strrchr(spec, ':');
  if (!last) return -1;
  if (weight) {
    *weight = (unsigned) strtoul(last + 1, NULL, 10);
    *last = '\0';
    last = strrchr(spec, ':');
    if (!last) return -1;
  }
  *port = (unsigned) strtoul(last + 1, NULL, 10);
  *last = '\0';
  *host = spec;
  return 0;
}

static const memcached_instance_st *by_key(memcached_st *memc, const char *key, size_t len) {
  memcached_return_t rc;
  return memcached_server_by_key(memc, key, len, &rc);
}

static int same_server(const memcached_instance_st *s, const char *host, unsigned port) {
  return s && strcmp(memcached_server_name(s), host) == 0 && memcached_server_port(s) == port;
}

static int eject(memcached_st *memc, char *spec) {
  char *host;
  unsigned port;
  if (split_host_port(spec, &host, &port, NULL)) return -1;
  char key[64];
  int found = 0;
  for (unsigned i = 0; i < 1000000 && !found; i++) {
    int n = snprintf(key, sizeof key, "eject-probe-%u", i);
    if (same_server(by_key(memc, key, (size_t) n), host, port)) found = 1;
  }
  if (!found) {
    fprintf(stderr, "ketama_place: no key maps to %s:%u\n", host, port);
    return -1;
  }
  for (int attempt = 0; attempt < 20; attempt++) {
    size_t vlen;
    uint32_t flags;
    memcached_return_t rc;
    char *v = memcached_get(memc, key, strlen(key), &vlen, &flags, &rc);
    free(v);
    if (!same_server(by_key(memc, key, strlen(key)), host, port)) {
      fprintf(stderr, "ketama_place: %s:%u ejected after %d GETs (last: %s)\n", host, port,
              attempt + 1, memcached_strerror(memc, rc));
      return 0;
    }
  }
  fprintf(stderr, "ketama_place: %s:%u was not ejected\n", host, port);
  return -1;
}

int main(int argc, char **argv) {
  char *ejects[MAX_SERVERS];
  int n_ejects = 0;
  memcached_st *memc = memcached_create(NULL);
  if (!memc) return 3;
  if (memcached_behavior_set(memc, MEMCACHED_BEHAVIOR_KETAMA_WEIGHTED, 1) != MEMCACHED_SUCCESS)
    return 3;

  int servers = 0;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "-e") == 0 && i + 1 < argc) {
      if (n_ejects == MAX_SERVERS) return 2;
      ejects[n_ejects++] = argv[++i];
      continue;
    }
    char *host;
    unsigned port, weight;
    if (split_host_port(argv[i], &host, &port, &weight)) {
      fprintf(stderr, "ketama_place: bad server '%s' (want HOST:PORT:WEIGHT)\n", argv[i]);
      return 2;
    }
    memcached_return_t rc = memcached_server_add_with_weight(memc, host, (in_port_t) port, weight);
    if (rc != MEMCACHED_SUCCESS) {
      fprintf(stderr, "ketama_place: cannot add %s: %s\n", host, memcached_strerror(memc, rc));
      return 3;
    }
    servers++;
  }
  if (servers == 0) {
    fprintf(stderr, "usage: ketama_place [-e HOST:PORT]... HOST:PORT:WEIGHT... < keys\n");
    return 2;
  }
  /* Sanity: the behaviour took (weighted ketama, MD5 keys). */
  if (memcached_behavior_get(memc, MEMCACHED_BEHAVIOR_DISTRIBUTION)
          != MEMCACHED_DISTRIBUTION_CONSISTENT_WEIGHTED
      || memcached_behavior_get(memc, MEMCACHED_BEHAVIOR_HASH) != MEMCACHED_HASH_MD5) {
    fprintf(stderr, "ketama_place: behaviours not as expected\n");
    return 3;
  }

  if (n_ejects) {
    memcached_behavior_set(memc, MEMCACHED_BEHAVIOR_REMOVE_FAILED_SERVERS, 1);
    memcached_behavior_set(memc, MEMCACHED_BEHAVIOR_SERVER_FAILURE_LIMIT, 1);
    memcached_behavior_set(memc, MEMCACHED_BEHAVIOR_RETRY_TIMEOUT, 3600);
    memcached_behavior_set(memc, MEMCACHED_BEHAVIOR_DEAD_TIMEOUT, 3600);
    memcached_behavior_set(memc, MEMCACHED_BEHAVIOR_CONNECT_TIMEOUT, 1000);
    for (int i = 0; i < n_ejects; i++)
      if (eject(memc, ejects[i])) return 3;
  }

  static char line[4096];
  while (fgets(line, sizeof line, stdin)) {
    size_t len = strlen(line);
    if (len && line[len - 1] == '\n') line[--len] = '\0';
    const memcached_instance_st *s = by_key(memc, line, len);
    if (s)
      printf("%s:%u\n", memcached_server_name(s), (unsigned) memcached_server_port(s));
    else
      printf("-\n");
  }
  memcached_free(memc);
  return ferror(stdout) ? 3 : 0;
}
