/* Version 4 UUIDs in bulk, free of Lua: a pool of random ids drawn from the kernel's CSPRNG
 * KR_UUID_BATCH at a time, and the one formatter of an id's 36 characters (uuid.c). */
#ifndef KRONOS_UUID_H
#define KRONOS_UUID_H

#define KR_UUID_BATCH 256 /* ids drawn per getrandom(2) call */

typedef struct {
    unsigned char raw[KR_UUID_BATCH][16];
    int next; /* the next unused id of raw; KR_UUID_BATCH when a refill is due */
} kr_uuid_pool;

/* An empty pool: its first kr_uuid_pool_next draws. */
void kr_uuid_pool_init(kr_uuid_pool *p);

/* Writes a new random id's 36 lower-case characters at out (no NUL); 0 (errno set) when the
 * kernel gave no randomness. */
int kr_uuid_pool_next(kr_uuid_pool *p, char *out);

#endif
