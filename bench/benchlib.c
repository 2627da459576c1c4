/* benchlib: what the benchmark driver needs and Lua lacks: a monotonic clock, and a process
 * runner that measures a child's wall time and peak RSS (wait4's ru_maxrss) without a shell.
 * Built by bench/run.sh into bench/work/benchlib.so (and bench/work/luajit/ for the LuaJIT
 * workers); not part of kronos. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <lua.h>
#include <lauxlib.h>

#if LUA_VERSION_NUM < 502 /* LuaJIT: the workers run on it too */
#define luaL_len(L, i) ((lua_Integer)lua_objlen(L, i))
#endif

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int l_now(lua_State *L)
{
    lua_pushnumber(L, now());
    return 1;
}

/* spawn({argv...}, [output path or nil for /dev/null]) -> exit code, seconds, peak RSS in kB.
 * The child's stdout and stderr both go to the output file. */
static int l_spawn(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    const char *out = luaL_optstring(L, 2, "/dev/null");
    int n = (int)luaL_len(L, 1);
    luaL_argcheck(L, n >= 1, 1, "empty argv");
    const char **argv = lua_newuserdata(L, sizeof(char *) * (size_t)(n + 1));
    luaL_checkstack(L, n, "spawn: too many arguments");
    for (int i = 0; i < n; i++) {
        lua_rawgeti(L, 1, i + 1);
        argv[i] = luaL_checkstring(L, -1); /* stays on the stack: a number's text lives on */
    }
    argv[n] = NULL;
    int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return luaL_error(L, "spawn: cannot open %s: %s", out, strerror(errno));
    double t0 = now();
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fd, 1);
        dup2(fd, 2);
        execvp(argv[0], (char *const *)argv);
        _exit(127);
    }
    close(fd);
    if (pid < 0) return luaL_error(L, "spawn: fork: %s", strerror(errno));
    int status;
    struct rusage ru;
    while (wait4(pid, &status, 0, &ru) < 0)
        if (errno != EINTR) return luaL_error(L, "spawn: wait4: %s", strerror(errno));
    double t1 = now();
    lua_pushinteger(L, WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
    lua_pushnumber(L, t1 - t0);
    lua_pushinteger(L, ru.ru_maxrss);
    return 3;
}

int luaopen_benchlib(lua_State *L)
{
    lua_newtable(L); /* not luaL_newlib: LuaJIT builds this too */
    lua_pushcfunction(L, l_now);
    lua_setfield(L, -2, "now");
    lua_pushcfunction(L, l_spawn);
    lua_setfield(L, -2, "spawn");
    return 1;
}
