-- luacheck: globals rocks_provided
-- LuaRocks configuration for installing kronos offline on Debian, Lua 5.4 (README, Installing):
--   LUAROCKS_CONFIG=tools/luarocks-lua5.4.lua luarocks --lua-version 5.4 make --tree DIR kronos-scm-1.rockspec
-- kronos needs argparse (the kronos command) and lua-cjson: Debian's lua-argparse and lua-cjson
-- packages (tools/deps.sh installs them) are not registered rocks, and the LuaRocks server is
-- unreachable. Declaring them provided lets LuaRocks check every other dependency and install
-- without fetching; the kronos wrapper in DIR/bin then finds DIR and the Debian packages.
-- (This file replaces only the per-user configuration; the system one still loads.)
rocks_provided = {
   argparse = "0.7.1-1",
   ["lua-cjson"] = "2.1.0-1",
}
