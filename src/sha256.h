/* SHA-256 of a byte string (sha256.c). */
#ifndef KRONOS_SHA256_H
#define KRONOS_SHA256_H

#include <stddef.h>

void kr_sha256(const void *data, size_t len, unsigned char out[32]);
void kr_sha256_hex(const void *data, size_t len, char out[65]);   /* lower-case hex, NUL-terminated */

#endif
