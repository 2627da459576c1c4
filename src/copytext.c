/* COPY text format: see copytext.h. */
#include <string.h>

#include "copytext.h"
#include "convert.h"

size_t kr_copytext_escape(const char *s, size_t len, char *out)
{
    char *o = out;
    for (size_t i = 0; i < len; i++) {
        char ch = s[i];
        switch (ch) {
        case '\\': *o++ = '\\'; *o++ = '\\'; break;
        case '\n': *o++ = '\\'; *o++ = 'n'; break;
        case '\r': *o++ = '\\'; *o++ = 'r'; break;
        case '\t': *o++ = '\\'; *o++ = 't'; break;
        default: *o++ = ch;
        }
    }
    return (size_t)(o - out);
}

size_t kr_copytext_field(const char *in, size_t len)
{
    const char *tab = memchr(in, '\t', len);
    return tab ? (size_t)(tab - in) : len;
}

static int octal(char c) { return c >= '0' && c <= '7'; }

size_t kr_copytext_unescape(const char *in, size_t len, char *out)
{
    if (len == 2 && in[0] == '\\' && in[1] == 'N') return KR_COPYTEXT_NULL;
    char *o = out;
    size_t i = 0;
    while (i < len) {
        char ch = in[i++];
        if (ch != '\\' || i == len) { /* a trailing lone backslash stands for itself */
            *o++ = ch;
            continue;
        }
        ch = in[i++];
        switch (ch) {
        case 'b': *o++ = '\b'; break;
        case 'f': *o++ = '\f'; break;
        case 'n': *o++ = '\n'; break;
        case 'r': *o++ = '\r'; break;
        case 't': *o++ = '\t'; break;
        case 'v': *o++ = '\v'; break;
        case 'x':
            if (i < len && kr_hexval(in[i]) >= 0) {
                int v = kr_hexval(in[i++]);
                if (i < len && kr_hexval(in[i]) >= 0) v = v * 16 + kr_hexval(in[i++]);
                *o++ = (char)v;
            } else {
                *o++ = 'x';
            }
            break;
        default:
            if (octal(ch)) {
                int v = ch - '0';
                if (i < len && octal(in[i])) v = v * 8 + (in[i++] - '0');
                if (i < len && octal(in[i])) v = v * 8 + (in[i++] - '0');
                *o++ = (char)(v & 0xff);
            } else {
                *o++ = ch;
            }
        }
    }
    return (size_t)(o - out);
}
