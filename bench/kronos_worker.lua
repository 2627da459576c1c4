-- The kronos side of the benchmark cases, one case per process:
--   lua5.4 bench/kronos_worker.lua URL MODE [N]
-- MODE: select1 | create | create_pipeline | create_many | read_exec | read_list | stream | typed |
--       typed_arrays | typed_columns (the typed modes: N rows or "table"). Runs on Lua 5.4 and LuaJIT.
local kronos = require "kronos"
local C = require "bench.common"

local url, mode, n = arg[1], arg[2], tonumber(arg[3] or 0)
local what = arg[3] -- typed modes: a number of rows or "table"
local conn = assert(kronos.connect(url))
local rows, check = 0, 0
local t0 = C.now()

if mode == "select1" then
    for _ = 1, n do
        local r = assert(conn:exec("select 1"))
        check = check + r[1]["?column?"]
    end
    rows = n
elseif mode == "create" then
    local users = kronos.users(conn)
    for i = 1, n do
        local email, first, last = C.user(i)
        assert(users:create{ email = email, first_name = first, last_name = last })
        check = check + #email
    end
    rows = n
elseif mode == "create_many" then
    -- The input a caller passes to create_many already exists: the list is built before the
    -- clock starts (bench/pqbench.c's copy mode likewise makes its users' fields first), so both
    -- sides time the same work: ids, checking/formatting, sending and the server's COPY.
    local users = kronos.users(conn)
    local list = C.user_list(n)
    for i = 1, n do check = check + #list[i].email end
    t0 = C.now()
    rows = assert(users:create_many(list))
elseif mode == "create_pipeline" then
    local sql = "INSERT INTO users (id, email, first_name, last_name) VALUES ($1, $2, $3, $4)"
    local r = assert(conn:pipeline(function(p)
        for i = 1, n do
            local email, first, last = C.user(i)
            p:exec(sql, kronos.uuid(), email, first, last)
            check = check + #email
        end
    end))
    assert(r.failed == 0, "a pipelined insert failed")
    rows = n
elseif mode == "read_exec" then
    local all = assert(conn:exec(C.READ_SQL))
    for i = 1, #all do check = check + #all[i].email end
    rows = #all
elseif mode == "read_list" then
    local users = kronos.users(conn)
    local all, cursor = {}, nil
    repeat
        local page
        page, cursor = users:list{ limit = 1000, after = cursor }
        assert(page, cursor)
        for i = 1, #page do
            all[#all + 1] = page[i]
            check = check + #page[i].email
        end
    until cursor == nil
    rows = #all
elseif mode == "stream" then
    for row in conn:rows(C.typed_sql(n)) do
        rows = rows + 1
        check = check + #row.t
    end
elseif mode == "typed" then
    local all = assert(conn:exec(C.typed_query(what)))
    for i = 1, #all do check = check + #all[i].t end
    rows = #all
elseif mode == "typed_arrays" then
    local all = assert(conn:exec_arrays(C.typed_query(what)))
    for i = 1, #all do check = check + #all[i][2] end
    rows = #all
elseif mode == "typed_columns" then
    local all = assert(conn:exec_columns(C.typed_query(what)))
    local t = all[2]
    for i = 1, all.n do check = check + #t[i] end
    rows = all.n
else
    error("unknown mode " .. tostring(mode))
end

C.report(C.now() - t0, rows, check, { rss_kb = C.vmhwm() })
conn:close()
