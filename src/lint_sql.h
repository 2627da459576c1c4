/* lint_sql.c: what the DDL safety check reads in SQL text, without Lua (the fuzz target links it). */
#ifndef KRONOS_LINT_SQL_H
#define KRONOS_LINT_SQL_H

#include <stddef.h>

/* Finds the first function call in the SQL expression expr[0..len) whose name is not known to
 * be stable or immutable (string literals and quoted identifiers skipped; a qualified name is
 * judged by its last part). Returns 1 and the name's bounds (*start, *n: the last part, never
 * empty, followed by optional blanks and '('), or 0 when every call is known stable. */
int kr_lint_sql_volatile_call(const char *expr, size_t len, size_t *start, size_t *n);

/* 1 when name[0..n) is, case-insensitively, a function kr_lint_sql_volatile_call accepts. */
int kr_lint_sql_stable(const char *name, size_t n);

#endif
