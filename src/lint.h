/* lint.c: the DDL safety check, and the one thing the engine's op shares with it. */
#ifndef KRONOS_LINT_H
#define KRONOS_LINT_H

#include "kronos.h"

/* The last argument (stack index n) loses its `safe` key (a copy replaces it) when it is an
 * options table that has one; returns 1 when safe was true. Builders never see `safe`. */
int kr_lint_strip_safe(lua_State *L, int n);

#endif
