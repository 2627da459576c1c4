-- luacheck: globals lua_version lua_interpreter variables rocks_provided
-- LuaRocks configuration for installing kronos offline on Debian, LuaJIT 2.1 (OpenResty's
-- runtime) (README, Installing):
--   LUAROCKS_CONFIG=tools/luarocks-luajit.lua luarocks --lua-version 5.1 make --tree DIR kronos-scm-1.rockspec
-- Debian's luarocks takes "5.1" to mean PUC Lua 5.1: its headers (/usr/include/lua5.1) and its
-- interpreter (lua5.1, which the kronos wrapper in DIR/bin would run). LuaJIT has headers and an
-- interpreter of its own; its modules go to the tree's 5.1 directories, which LuaJIT searches.
-- lua-cjson: see tools/luarocks-lua5.4.lua.
-- (This file replaces only the per-user configuration; the system one still loads.)
lua_version = "5.1"
lua_interpreter = "luajit"
variables = {
   LUA_DIR = "/usr",
   LUA_BINDIR = "/usr/bin",
   LUA_INCDIR = "/usr/include/luajit-2.1",
}
rocks_provided = {
   ["lua-cjson"] = "2.1.0-1",
}
