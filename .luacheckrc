-- luacheck configuration for `make lint` (lua bin spec migrations examples bench tools).
-- kronos runs on Lua 5.4 and LuaJIT 2.1: allow the globals of every Lua version.
std = "max"
codes = true
max_line_length = 130
-- generated or scratch output of the benchmarks and the build
exclude_files = { "bench/work/**", "build/**", "**/build/**", ".pgdata/**" }

files["spec"] = { std = "+busted" }
files["examples/openresty"] = { std = "+ngx_lua" }
files["bin/kronos"] = { std = "max" }
