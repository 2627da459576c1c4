/* The Lua-free core of the DDL generator: quoting, type names, conventional names.
 * Plain C over byte strings, so the Lua bindings and a libFuzzer target share it.
 * Every function returns the length written to out (NUL-terminated, out never overrun)
 * or one of the negative KR_DDL_E* codes below; on error out holds "" when outsz > 0. */
#ifndef KRONOS_DDL_H
#define KRONOS_DDL_H

#include <stddef.h>

/* PostgreSQL's NAMEDATALEN - 1: the server silently truncates longer identifiers. */
#define KR_DDL_NAMEMAX 63
/* Longest quoted identifier: every byte a doubled quote, plus the two enclosing quotes. */
#define KR_DDL_QUOTEDMAX (2 * KR_DDL_NAMEMAX + 2)
/* Longest canonical type name kr_ddl_parse_type produces, with its NUL. */
#define KR_DDL_TYPEMAX 96
/* Longest canonical foreign key action ("SET DEFAULT"), with its NUL. */
#define KR_DDL_ACTIONMAX 16

enum {
    KR_DDL_EEMPTY = -1,  /* empty name or text */
    KR_DDL_ENUL = -2,    /* embedded NUL byte */
    KR_DDL_ELONG = -3,   /* name longer than KR_DDL_NAMEMAX bytes */
    KR_DDL_EUTF8 = -4,   /* not valid UTF-8 (connections use client_encoding UTF8) */
    KR_DDL_ESPACE = -5,  /* out too small */
    KR_DDL_ETYPE = -6,   /* unknown type name or malformed type */
    KR_DDL_ERANGE = -7,  /* type modifier out of range: varchar length, numeric precision/scale */
    KR_DDL_EACTION = -8  /* not a foreign key action */
};

/* A message for a KR_DDL_E* code. */
const char *kr_ddl_strerror(int code);

/* 0 when s is valid UTF-8 without NUL bytes, else KR_DDL_ENUL or KR_DDL_EUTF8. */
int kr_ddl_check_text(const char *s, size_t len);

/* The one quoting kernel of kronos, for names and literals alike (the DDL builder here, the
 * engine's version table in migrate_sql.c): in between two quote characters with each quote
 * doubled; a literal (quote '\'') holding a backslash becomes E'...' with backslashes doubled
 * too, which reads the same whatever standard_conforming_strings says. No checks: returns the
 * length needed and writes out (NUL-terminated) only when outsz > that length. */
size_t kr_ddl_quote(char quote, const char *in, size_t len, char *out, size_t outsz);

/* "name" with embedded quotes doubled; rejects empty, NUL, invalid UTF-8, > 63 bytes. */
int kr_ddl_quote_ident(const char *in, size_t len, char *out, size_t outsz);

/* A string literal: '...' with quotes doubled, or E'...' with quotes and backslashes doubled
 * when the text holds a backslash (correct whatever standard_conforming_strings says).
 * Rejects NUL and invalid UTF-8. Returns the full length needed even when out is too small
 * (snprintf style: out is written only when outsz > the returned length). */
long kr_ddl_quote_literal(const char *in, size_t len, char *out, size_t outsz);

/* Parses a kronos type name (case-insensitive, whitespace-tolerant) into PostgreSQL's:
 * "string(255)" -> "varchar(255)", "double" -> "double precision", "Integer []" -> "integer[]".
 * Only known names and decimal modifiers are accepted, so no SQL can pass through. */
int kr_ddl_parse_type(const char *in, size_t len, char *out, size_t outsz);

/* Fits a conventional name (e.g. "ix_<table>_<column>") into 63 bytes: names that fit are
 * copied; longer ones become their first 54 bytes (cut back to a UTF-8 character boundary)
 * + "_" + the 8 lowercase hex digits of the FNV-1a 32-bit hash of the whole name. */
int kr_ddl_fit_name(const char *in, size_t len, char *out, size_t outsz);

/* "set null", " Cascade " -> "SET NULL", "CASCADE"; one of CASCADE, SET NULL, SET DEFAULT,
 * RESTRICT, NO ACTION (case-insensitive, any whitespace between words). */
int kr_ddl_fk_action(const char *in, size_t len, char *out, size_t outsz);

#endif
