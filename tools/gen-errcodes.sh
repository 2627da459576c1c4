#!/bin/sh
# Regenerates src/errcodes.h from the server's errcodes.txt (sorted by SQLSTATE for bsearch).
set -eu
src=${1:-/usr/share/postgresql/15/errcodes.txt}
{
echo '/* Generated from PostgreSQL 15 errcodes.txt by tools/gen-errcodes.sh: SQLSTATE -> condition name. */'
echo 'static const struct kr_errcode { const char state[6]; const char *name; } kr_errcodes[] = {'
grep -E '^[0-9A-Z]{5} +[EWS] +ERRCODE_[A-Z_0-9]+ +[a-z_0-9]+' "$src" | awk '{print "    {\"" $1 "\", \"" $4 "\"},"}' | LC_ALL=C sort -u -t'"' -k2,2
echo '};'
} > src/errcodes.h
