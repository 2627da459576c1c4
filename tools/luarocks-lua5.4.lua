-- luacheck: globals rocks_provided
-- LuaRocks configuration for installing kronos offline on Debian, Lua 5.4 (README, Installing):
--   LUAROCKS_CONFIG=tools/luarocks-lua5.4.lua luarocks --lua-version 5.4 make --tree DIR kronos-scm-1.rockspec
-- kronos needs lua-cjson (kronos --json): Debian's lua-cjson package (tools/deps.sh installs it)
-- is not a registered rock, and the LuaRocks server is unreachable. Declaring it provided lets
-- LuaRocks check every other dependency and install without fetching; the kronos wrapper in
-- DIR/bin then finds DIR and the Debian package.
-- (This file replaces only the per-user configuration; the system one still loads.)
rocks_provided = {
   ["lua-cjson"] = "2.1.0-1",
}
