-- The LuaSQL side (lua-sql-postgres, what a Lua user would otherwise pick), one case per process:
--   lua5.4 bench/luasql_worker.lua URL MODE [N]
-- MODE: select1 | create | create_list | read | stream | typed (N rows or "table"). LuaSQL has no parameters:
-- values are escaped with con:escape and interpolated, as its users do; ids are version 4 UUIDs
-- made in Lua.
local driver = require "luasql.postgres"
local C = require "bench.common"

local url, mode, n = arg[1], arg[2], tonumber(arg[3] or 0)
local env = assert(driver.postgres())
local con = assert(env:connect(url))
local random = math.random
local rows, check = 0, 0

local function uuid4()
    return ("%08x-%04x-4%03x-%04x-%04x%08x"):format(random(0, 0xffffffff), random(0, 0xffff),
        random(0, 0xfff), random(0x8000, 0xbfff), random(0, 0xffff), random(0, 0xffffffff))
end

local function fetch_all(sql)
    local cur = assert(con:execute(sql))
    local all, row = {}, cur:fetch({}, "a")
    while row do
        all[#all + 1] = row
        row = cur:fetch({}, "a")
    end
    cur:close()
    return all
end

local t0 = C.now()
if mode == "select1" then
    for _ = 1, n do
        local cur = assert(con:execute("select 1"))
        check = check + tonumber(cur:fetch())
        cur:close()
    end
    rows = n
elseif mode == "create" then
    local sql = "INSERT INTO users (id, email, first_name, last_name) VALUES ('%s', '%s', '%s', '%s')"
    for i = 1, n do
        local email, first, last = C.user(i)
        assert(con:execute(sql:format(uuid4(), con:escape(email), con:escape(first), con:escape(last))) == 1)
        check = check + #email
    end
    rows = n
elseif mode == "create_list" then
    -- The bulk case's loop: the same INSERTs over a list built before the clock starts, as
    -- kronos_worker.lua's create_many times its call on a ready list.
    local list = C.user_list(n)
    t0 = C.now()
    local sql = "INSERT INTO users (id, email, first_name, last_name) VALUES ('%s', '%s', '%s', '%s')"
    for i = 1, n do
        local u = list[i]
        assert(con:execute(sql:format(uuid4(), con:escape(u.email), con:escape(u.first_name), con:escape(u.last_name))) == 1)
        check = check + #u.email
    end
    rows = n
elseif mode == "read" then
    local all = fetch_all(C.READ_SQL)
    for i = 1, #all do check = check + #all[i].email end
    rows = #all
elseif mode == "stream" then
    -- LuaSQL's cursor holds the whole result (PQexec): this is its peak memory for the same loop.
    local cur = assert(con:execute(C.typed_sql(n)))
    local row = cur:fetch({}, "a")
    while row do
        rows = rows + 1
        check = check + #row.t
        row = cur:fetch(row, "a")
    end
    cur:close()
elseif mode == "typed" then
    local all = fetch_all(C.typed_query(arg[3]))
    for i = 1, #all do check = check + #all[i].t end
    rows = #all
else
    error("unknown mode " .. tostring(mode))
end

C.report(C.now() - t0, rows, check, { rss_kb = C.vmhwm() })
con:close()
env:close()
