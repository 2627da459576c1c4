/* UUIDs: kronos.uuid(), kronos.is_uuid() (the text check is validate.c's), and the id pool of
 * users:create_many (uuid.h). */
#define _GNU_SOURCE /* getrandom */
#include <errno.h>
#include <string.h>
#include <sys/random.h>

#include <uuid/uuid.h>

#include "kronos.h"
#include "uuid.h"
#include "validate.h"

/* Two lower-case hex digits per byte value: an id is 16 lookups, not 32 divisions. */
static const char hexpairs[] =
    "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
    "202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f"
    "404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f"
    "606162636465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f"
    "808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f"
    "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf"
    "c0c1c2c3c4c5c6c7c8c9cacbcccdcecfd0d1d2d3d4d5d6d7d8d9dadbdcdddedf"
    "e0e1e2e3e4e5e6e7e8e9eaebecedeeeff0f1f2f3f4f5f6f7f8f9fafbfcfdfeff";

/* The canonical form, as libuuid's uuid_unparse_lower writes it (spec/uuid_spec.lua checks the
 * server reads it back as the same id). */
void kr_uuid_text(const unsigned char u[16], char *out)
{
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10) *out++ = '-';
        memcpy(out, hexpairs + 2 * u[i], 2);
        out += 2;
    }
}

/* libuuid makes the single ids (its uuid_generate_random reads the kernel's randomness; its
 * per-call cost does not matter for one id). */
void kr_uuid_format(char out[37])
{
    uuid_t u;
    uuid_generate_random(u);
    kr_uuid_text(u, out);
    out[36] = '\0';
}

void kr_uuid_pool_init(kr_uuid_pool *p)
{
    p->next = KR_UUID_BATCH;
}

/* Fills the pool with one getrandom(2) call (the kernel's CSPRNG gives the 122 random bits) and
 * sets the version (4) and variant (10) bits as RFC 4122 says: libuuid's uuid_generate_random
 * re-seeds its own generator on every call, which was most of create_many's instructions. */
static int pool_refill(kr_uuid_pool *p)
{
    size_t got = 0;
    unsigned char *raw = &p->raw[0][0];
    while (got < sizeof p->raw) {
        ssize_t n = getrandom(raw + got, sizeof p->raw - got, 0);
        if (n < 0) {
            if (errno == EINTR) continue;
            return 0;
        }
        got += (size_t)n;
    }
    for (int i = 0; i < KR_UUID_BATCH; i++) {
        p->raw[i][6] = (unsigned char)((p->raw[i][6] & 0x0f) | 0x40);
        p->raw[i][8] = (unsigned char)((p->raw[i][8] & 0x3f) | 0x80);
    }
    p->next = 0;
    return 1;
}

int kr_uuid_pool_next(kr_uuid_pool *p, char *out)
{
    if (p->next == KR_UUID_BATCH && !pool_refill(p)) return 0;
    kr_uuid_text(p->raw[p->next++], out);
    return 1;
}

static int l_uuid(lua_State *L)
{
    char text[37];
    kr_uuid_format(text);
    lua_pushlstring(L, text, 36);
    return 1;
}

static int l_is_uuid(lua_State *L)
{
    size_t len;
    const char *s = lua_type(L, 1) == LUA_TSTRING ? lua_tolstring(L, 1, &len) : NULL;
    lua_pushboolean(L, s != NULL && kr_check_uuid(s, len));
    return 1;
}

void kr_open_uuid(lua_State *L)
{
    static const luaL_Reg funcs[] = {{"uuid", l_uuid}, {"is_uuid", l_is_uuid}, {NULL, NULL}};
    luaL_setfuncs(L, funcs, 0);
}
