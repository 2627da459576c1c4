/* The Lua chunks the kronos program carries (tools/embed.lua writes them from bin/kronos and
 * the modules of lua/kronos/ at build time; bin/launcher.c runs them). */
#ifndef KRONOS_CHUNKS_H
#define KRONOS_CHUNKS_H

#include <stddef.h>

typedef struct kr_chunk {
    const char *name;          /* the require name; "" for the main chunk (bin/kronos) */
    const unsigned char *code; /* bytecode of this build's Lua */
    size_t size;
} kr_chunk;

/* The main chunk first, then the modules; ends with name NULL. */
extern const kr_chunk kr_chunks[];

#endif
