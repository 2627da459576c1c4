/* UUIDs: kronos.uuid(), kronos.is_uuid() (the text check is validate.c's), and the id pool of
 * users:create_many (uuid.h). */
#define _GNU_SOURCE /* getrandom */
#include <errno.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "convert.h"
#include "kronos.h"
#include "uuid.h"
#include "validate.h"

/* The 36 lower-case characters of the 16 bytes u (8-4-4-4-12, no NUL) at out: the canonical
 * form, as libuuid's uuid_unparse_lower writes it, with kronos's one hex writer (convert.h);
 * spec/uuid_spec.lua checks that the server reads it back as the same id. */
static void uuid_text(const unsigned char u[16], char *out)
{
    static const unsigned char groups[] = {4, 2, 2, 2, 6}; /* bytes per dash-separated group */
    const char *in = (const char *)u;
    for (int g = 0; g < 5; g++) {
        if (g > 0) *out++ = '-';
        kr_hex_digits(in, groups[g], out);
        in += groups[g];
        out += 2 * groups[g];
    }
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
    uuid_text(p->raw[p->next++], out);
    return 1;
}

/* The single ids (users:create, kronos.uuid) come from a pool too: libuuid's
 * uuid_generate_random costs about 8 us a call (it re-seeds its generator), as much as the
 * INSERT it is for when statements are pipelined. The pool is the thread's own (Lua states are
 * used by one thread at a time, but a host may run several) and belongs to one process: after a
 * fork (OpenResty's workers, forked from the master that may have drawn ids in init_by_lua) the
 * child drops what it inherited, so no two processes ever hand out the same id. Raises
 * random_failed when the kernel gives no randomness. */
void kr_uuid_format(lua_State *L, char out[37])
{
    static _Thread_local kr_uuid_pool pool = {.next = KR_UUID_BATCH};
    static _Thread_local pid_t owner;
    pid_t pid = getpid();
    if (owner != pid) {
        pool.next = KR_UUID_BATCH;
        owner = pid;
    }
    if (!kr_uuid_pool_next(&pool, out)) kr_error_raise(L, "random_failed", "getrandom: %s", strerror(errno));
    out[36] = '\0';
}

static int l_uuid(lua_State *L)
{
    char text[37];
    kr_uuid_format(L, text);
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
