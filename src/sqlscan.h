/* Lexical scans of SQL text written by migration authors, with no Lua and no libpq (so the
 * fuzzer links it alone): where statements end, which of them end a transaction. Strings,
 * quoted identifiers, comments and dollar quotes are skipped as PostgreSQL reads them. */
#ifndef KRONOS_SQLSCAN_H
#define KRONOS_SQLSCAN_H

int kr_sqlscan_batchable(const char *sql);          /* safe to join with ";\n" to others */
const char *kr_sqlscan_txcontrol(const char *sql);  /* "COMMIT", "ROLLBACK", ... when a statement ends a transaction */
const char *kr_sqlscan_terminator(const char *sql); /* ";" or "\n;" after it in a script */

#endif
