-- kronos, built from a checkout with `luarocks make`, offline with Debian's luarocks and packages
-- (README, "Installing"):
--   Lua 5.4:  LUAROCKS_CONFIG=tools/luarocks-lua5.4.lua luarocks --lua-version 5.4 make --tree DIR kronos-scm-1.rockspec
--   LuaJIT:   LUAROCKS_CONFIG=tools/luarocks-luajit.lua luarocks --lua-version 5.1 make --tree DIR kronos-scm-1.rockspec
-- The C is built by the Makefile (every src/*.c) and `make install` installs every lua/**/*.lua:
-- there is no list here to keep in step. A lua.h that is neither Lua 5.4 nor LuaJIT 2.1 stops the
-- build (src/compat.h).
rockspec_format = "3.0"
package = "kronos"
version = "scm-1"
source = {
   -- no published repository: `luarocks make` builds the checkout it runs in, never fetching this.
   url = "git+file://.",
}
description = {
   summary = "PostgreSQL for Lua over libpq, with schema migrations and the Kronos user model",
   detailed = [[
kronos is a Lua module written in C that wraps libpq: exact type conversion, parameters always
sent as parameters, streaming results, transactions with savepoints. It carries a schema-migration
engine (Lua migration files over C-backed DDL helpers, the `kronos` command) and the Kronos user
model, whose migration ships as the module kronos.migrations. Lua 5.4 and LuaJIT 2.1 (OpenResty).
]],
   license = "MIT",
}
-- What the installed code needs (spec/rockspec_spec.lua checks this against the requires of
-- lua/ and bin/). Offline, Debian's lua-cjson (not a registered rock) provides lua-cjson:
-- tools/luarocks-*.lua declare it provided.
dependencies = {
   "lua >= 5.1, < 5.5",
   "lua-cjson >= 2.1",    -- kronos --json
}
external_dependencies = {
   PQ = { library = "pq" },
}
build = {
   type = "make",
   -- BUILD: the rock's own object directory (the Makefile recompiles when LUA_INC changes).
   -- WERROR empty: the project's -Werror is for its own CI, not for a user's compiler.
   -- LUA_BIN: the kronos command (bin/launcher.c) is compiled to this Lua's bytecode by its
   -- interpreter and linked with its library; make install puts it in the rock's bin (INST_BINDIR).
   build_variables = {
      LUA_INC = "$(LUA_INCDIR)",
      LUA_BIN = "$(LUA)",
      CFLAGS = "$(CFLAGS)",
      BUILD = "build/rock",
      WERROR = "",
   },
   install_variables = {
      LUA_INC = "$(LUA_INCDIR)",
      LUA_BIN = "$(LUA)",
      CFLAGS = "$(CFLAGS)",
      BUILD = "build/rock",
      WERROR = "",
      INST_LIBDIR = "$(LIBDIR)",
      INST_LUADIR = "$(LUADIR)",
      INST_BINDIR = "$(BINDIR)",
   },
}
