-- The benchmark driver (bench/run.sh starts it with DATABASE_URL set to a private server).
-- Each case runs kronos, its peer and the C limit interleaved, RUNS times each, checks that
-- they did the same work, and reports medians and the ratios between them.
local kronos = require "kronos"
local benchlib = require "benchlib"
local C = require "bench.common"

local ROOT = assert(os.getenv("KRONOS_ROOT"), "run through bench/run.sh")
local WORK = ROOT .. "/bench/work"
-- kronos as bench/run.sh built it (BENCH_BUILD: bench/work/build unless given another)
local BUILD = ROOT .. "/" .. (os.getenv("BENCH_BUILD_DIR") or "bench/work/build")
local BASE_URL = assert(os.getenv("DATABASE_URL"), "run through bench/run.sh")
local RUNS = math.max(5, tonumber(os.getenv("BENCH_RUNS") or "7"))
local ONLY = os.getenv("BENCH_CASES")
local LUA = "lua5.4"
-- LuaJIT workers: kronos, benchlib and the floor built for LuaJIT (bench/run.sh), through env(1)
-- because LUA_CPATH is set for Lua 5.4 here.
local JIT_CPATH = BUILD .. "/luajit/?.so;" .. ROOT .. "/bench/work/luajit/?.so;;"
local JIT = { "env", "LUA_CPATH=" .. JIT_CPATH, "luajit" }
local function popen_read(cmd)
    local p = io.popen(cmd .. " 2>/dev/null")
    local out = p:read("a"):gsub("%s+$", "")
    p:close()
    return out
end
-- The psql program itself: Debian's /usr/bin/psql is a Perl wrapper that picks a version first.
local PSQL = popen_read("pg_config --bindir") .. "/psql"
local ALEMBIC = "/usr/bin/alembic" -- Debian's, with Debian's python3 (not a pyenv one on PATH)
local PQBENCH = WORK .. "/pqbench"
local MIGRATIONS = ROOT .. "/migrations"
local VERSION_TABLES = "{alembic_version,kronos_version}"

local N_CREATE, N_BULK, N_READ, N_STREAM, N_SELECT1 = 20000, 100000, 100000, 1000000, 20000

local admin = assert(kronos.connect(BASE_URL))

-- The argv of a kronos or LuaSQL worker process.
local function kw(url, mode, n) return { LUA, ROOT .. "/bench/kronos_worker.lua", url, mode, n } end
local function lw(url, mode, n) return { LUA, ROOT .. "/bench/luasql_worker.lua", url, mode, n } end
local function fw(url, shape, what) return { LUA, ROOT .. "/bench/floor_worker.lua", url, shape, what } end
local function on_jit(argv) -- the same worker argv, run by LuaJIT
    local t = { table.unpack(JIT) }
    for i = 2, #argv do t[#t + 1] = argv[i] end
    return t
end

---------------------------------------------------------------------------------------------
-- helpers

local function url_for(dbname)
    local head, query = BASE_URL:match("^(postgres%a*://[^/?]*)/?[^?]*(.*)$")
    return head .. "/" .. dbname .. query
end

local function drop_db(name)
    assert(admin:exec("DROP DATABASE IF EXISTS " .. admin:escape_identifier(name) .. " WITH (FORCE)"))
end

local function fresh_db(name)
    drop_db(name)
    assert(admin:exec("CREATE DATABASE " .. admin:escape_identifier(name)))
    return url_for(name)
end

local function query(url, sql, ...)
    local conn = assert(kronos.connect(url))
    local rows, err = conn:exec(sql, ...)
    conn:close()
    return assert(rows, err)
end

local function readfile(path)
    local f = assert(io.open(path, "rb"))
    local s = f:read("a")
    f:close()
    return s
end

-- Runs a program (no shell), returns its key=value output fields plus wall, maxrss_kb, output.
local function run(argv)
    local out = WORK .. "/last.out"
    local code, secs, rss = benchlib.spawn(argv, out)
    local text = readfile(out)
    if code ~= 0 then
        error(("%s exited %d:\n%s"):format(table.concat(argv, " "), code, text:sub(1, 2000)), 0)
    end
    local r = { wall = secs, maxrss_kb = rss, output = text }
    for k, v in text:gmatch("([%w_]+)=(%S+)") do r[k] = tonumber(v) or v end
    return r
end

local function median(xs)
    local s = {}
    for i, x in ipairs(xs) do s[i] = x end
    table.sort(s)
    local n = #s
    return n % 2 == 1 and s[(n + 1) // 2] or (s[n // 2] + s[n // 2 + 1]) / 2
end

local function same(what, a, b)
    if a ~= b then error(("check failed: %s: %s ~= %s"):format(what, tostring(a), tostring(b)), 0) end
end

local function fmt_time(s)
    if s < 1e-3 then return ("%.1f µs"):format(s * 1e6) end
    if s < 1 then return ("%.1f ms"):format(s * 1e3) end
    return ("%.2f s"):format(s)
end

local function fmt_rate(r)
    if r >= 1e6 then return ("%.2fM/s"):format(r / 1e6) end
    if r >= 1e3 then return ("%.1fk/s"):format(r / 1e3) end
    return ("%.0f/s"):format(r)
end

local function ratio(x) return x and ("%.2fx"):format(x) or "" end

-- The schema of a database's public tables (the version tables aside), one line per item.
local SCHEMA_SQL = [[
SELECT 'column ' || c.relname || '.' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
       || CASE WHEN a.attnotnull THEN ' not null' ELSE '' END
       || coalesce(' default ' || pg_get_expr(d.adbin, d.adrelid), '') AS item
  FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
  JOIN pg_namespace n ON n.oid = c.relnamespace
  LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
 WHERE n.nspname = 'public' AND c.relkind = 'r' AND a.attnum > 0 AND NOT a.attisdropped
   AND c.relname <> ALL($1::text[])
UNION ALL
SELECT 'constraint ' || c.relname || ' ' || k.conname || ' ' || pg_get_constraintdef(k.oid)
  FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid
  JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = 'public' AND c.relname <> ALL($1::text[])
UNION ALL
SELECT 'index ' || indexdef FROM pg_indexes
 WHERE schemaname = 'public' AND tablename <> ALL($1::text[])
ORDER BY 1]]

local function schema_of(url)
    local lines = {}
    for i, r in ipairs(query(url, SCHEMA_SQL, VERSION_TABLES)) do lines[i] = r.item end
    return lines
end

local function same_schema(what, url_a, url_b)
    local a, b = schema_of(url_a), schema_of(url_b)
    if #a == 0 then error("check failed: " .. what .. ": empty schema", 0) end
    for i = 1, math.max(#a, #b) do
        if a[i] ~= b[i] then
            error(("check failed: %s: schemas differ at item %d: %s | %s"):format(what, i,
                tostring(a[i]), tostring(b[i])), 0)
        end
    end
    return #a
end

---------------------------------------------------------------------------------------------
-- the results table

local results, notes = {}, {}

-- Paired ratio: the median over runs of other[i] / kronos[i] (costs: lower is better), so a
-- slow spell of the shared machine weighs on both sides of the same run.
local function paired(k, other)
    if not other then return nil end
    local r = {}
    for i = 1, math.min(#k, #other) do r[i] = other[i] / k[i] end
    return median(r)
end

-- row: case, unit ("time" | "rate" | "mb" | "ir"), n (rows, for rates), k / p / l: the costs of
-- kronos, the peer and the limit per run (seconds, MB or instructions), peer_name, limit_name,
-- target (text) and met(vs_peer, vs_limit, kronos_median) -> boolean.
local function add(row)
    local function show(xs, name)
        if not xs then return "" end
        local v = median(xs)
        local s = row.unit == "rate" and fmt_rate(row.n / v)
            or row.unit == "mb" and ("%.1f MB"):format(v)
            or row.unit == "ir" and ("%.0f Ir"):format(v)
            or fmt_time(v)
        return name and (s .. " (" .. name .. ")") or s
    end
    local vp, vl = paired(row.k, row.p), paired(row.k, row.l)
    local met = row.met and row.met(vp, vl, median(row.k))
    local jit = ""
    if row.j then -- kronos on LuaJIT, against the row's LuaJIT peer (or limit) when it has one
        local against, name = row.jp or row.jl, row.jp and row.jp_name or row.jl_name
        jit = show(row.j) .. (against and (" (%s %s)"):format(ratio(paired(row.j, against)), name) or "")
    end
    results[#results + 1] = {
        case = row.case,
        jit = jit,
        kronos = show(row.k),
        peer = show(row.p, row.peer_name),
        limit = show(row.l, row.limit_name),
        vs_peer = ratio(vp),
        vs_limit = ratio(vl),
        target = row.target or "",
        met = met == nil and "" or met and "met" or "**missed**",
    }
    local r = results[#results]
    io.write(("%-34s %-14s %-26s %-26s %-8s %-8s %s\n"):format(r.case, r.kronos, r.peer, r.limit,
        r.vs_peer, r.vs_limit, r.met))
    io.flush()
end

local function fail_row(case, err)
    results[#results + 1] = { case = case, kronos = "error", jit = "", peer = "", limit = "", vs_peer = "",
        vs_limit = "", target = "", met = "**error**" }
    notes[#notes + 1] = ("- %s did not report: %s"):format(case, tostring(err):gsub("\n", " "):sub(1, 400))
    io.write(("%-34s ERROR %s\n"):format(case, err))
end

---------------------------------------------------------------------------------------------
-- the cases

local cases = {}

-- Runs the sides in an order rotated by the iteration, so that none always goes first (and pays
-- for what the one before left behind: WAL, dirty buffers, a truncated table's old files).
local function rotated(i, sides)
    for j = 0, #sides - 1 do sides[(i + j) % #sides + 1]() end
end

-- A new process: `kronos upgrade` (the kronos program, bin/launcher.c, as make install and the
-- rock install it) at head, against `alembic upgrade head` and the psql program running
-- `select 1` (the least a client process that connects can do).
local function cg_total(argv)
    local out = WORK .. "/callgrind.out"
    local vg = { "valgrind", "--tool=callgrind", "--callgrind-out-file=" .. out }
    for _, a in ipairs(argv) do vg[#vg + 1] = a end
    local r = run(vg)
    os.remove(out)
    return assert(tonumber(r.output:match("Collected : (%d+)")), "no callgrind summary"), r
end

function cases.startup()
    local kurl = fresh_db("bench_startup_kronos")
    local aurl = fresh_db("bench_startup_alembic")
    local args = { "upgrade", "-d", kurl, "--dir", MIGRATIONS }
    local function command(prefix)
        local argv = { table.unpack(prefix) }
        for _, a in ipairs(args) do argv[#argv + 1] = a end
        return argv
    end
    -- bench/run.sh builds both programs (make BUILD=<BUILD>/<lua>)
    local kronos_upgrade = command { BUILD .. "/lua5.4/bin/kronos" }
    local jit_upgrade = command { BUILD .. "/luajit/bin/kronos" }
    local script_upgrade = command { LUA, ROOT .. "/bin/kronos" } -- the same CLI as a Lua script
    run(kronos_upgrade)
    run { ALEMBIC, "-c", ROOT .. "/bench/alembic/alembic.ini", "-x", "url=" .. aurl, "upgrade", "head" }
    same_schema("startup: kronos users migration vs Alembic's", kurl, aurl)
    local version = query(kurl, "SELECT string_agg(revision, ',' ORDER BY revision) AS v FROM kronos_version")[1].v
    local psql = { PSQL, "-X", "-Atq", "-d", kurl, "-c", "select 1" }
    local k, a, p, j = {}, {}, {}, {}
    local runs = RUNS * 3
    for i = 1, runs do
        rotated(i, {
            function() k[i] = run(kronos_upgrade).wall end,
            function() a[i] = run({ ALEMBIC, "-c", ROOT .. "/bench/alembic/alembic.ini", "-x", "url=" .. aurl,
                "upgrade", "head" }).wall end,
            function() p[i] = run(psql).wall end,
            function() j[i] = run(jit_upgrade).wall end,
        })
    end
    same("startup: kronos upgrade left the version alone",
        query(kurl, "SELECT string_agg(revision, ',' ORDER BY revision) AS v FROM kronos_version")[1].v, version)
    same_schema("startup: after the runs", kurl, aurl)
    add { case = "no-op `kronos upgrade` (new process)", unit = "time", k = k, p = a, l = p, j = j, jl = p,
        peer_name = "Alembic", limit_name = "psql -c 'select 1'", jl_name = "psql",
        target = ">= 20x Alembic, <= 1.3x psql", met = function(vp, vl) return vp >= 20 and vl >= 1 / 1.3 end }
    local ki, ji, si = cg_total(kronos_upgrade), cg_total(jit_upgrade), cg_total(script_upgrade)
    local pi = cg_total(psql)
    add { case = "no-op `kronos upgrade`: instructions (callgrind)", unit = "ir", k = { ki }, l = { pi },
        j = { ji }, jl = { pi }, jl_name = "psql", limit_name = "psql -c 'select 1'",
        target = "<= 1.3x psql", met = function(_, vl) return vl >= 1 / 1.3 end }
    add { case = "the same, as `lua5.4 bin/kronos` (the script)", unit = "ir", k = { si }, l = { pi },
        limit_name = "psql -c 'select 1'" }
    drop_db("bench_startup_kronos")
    drop_db("bench_startup_alembic")
end

-- upgrade base -> head over 500 generated migrations.

function cases.migrate500()
    local dir = WORK .. "/m500"
    run { LUA, ROOT .. "/bench/gen500.lua", dir, "500" }
    local sqlfile = dir .. "/kronos-offline.sql"
    run { LUA, ROOT .. "/bench/startup.lua", "-", dir .. "/kronos", "sql", sqlfile }
    local ini = dir .. "/alembic/alembic.ini"
    local k, a, p = {}, {}, {}
    for i = 1, RUNS do
        local kurl, aurl, purl = fresh_db("bench_m500_k"), fresh_db("bench_m500_a"), fresh_db("bench_m500_p")
        -- CREATE DATABASE leaves WAL and dirty buffers behind: flush them before timing, and
        -- rotate who goes first, so that no side always pays for what the last one left.
        query(kurl, "CHECKPOINT")
        rotated(i, {
            function()
                local r = run { LUA, ROOT .. "/bench/startup.lua", kurl, dir .. "/kronos" }
                same("500 migrations: kronos applied", r.applied, 500)
                k[i] = r.wall
            end,
            function() a[i] = run({ ALEMBIC, "-c", ini, "-x", "url=" .. aurl, "upgrade", "head" }).wall end,
            function() p[i] = run({ PSQL, "-X", "-q", "-1", "-v", "ON_ERROR_STOP=1", "-d", purl, "-f", sqlfile }).wall end,
        })
        if i == 1 then
            local items = same_schema("500 migrations: kronos vs Alembic", kurl, aurl)
            same_schema("500 migrations: kronos vs psql -f of its offline SQL", kurl, purl)
            notes[#notes + 1] = ("- 500 migrations: the three databases have the same schema (%d columns, "
                .. "constraints and indexes compared from pg_catalog)."):format(items)
        end
        for _, url in ipairs { kurl, aurl, purl } do
            same("500 migrations: tables created", query(url,
                "SELECT count(*) AS n FROM pg_tables WHERE schemaname = 'public' AND tablename LIKE 't%'")[1].n, 500)
        end
        drop_db("bench_m500_k"); drop_db("bench_m500_a"); drop_db("bench_m500_p")
    end
    add { case = "500 migrations, base -> head", unit = "time", k = k, p = a, l = p, peer_name = "Alembic",
        limit_name = "psql -1 -f", target = "> 1x Alembic, >= 1/1.05 = 0.95x psql",
        met = function(vp, vl) return vp > 1 and vl >= 1 / 1.05 end }
end

-- The bench users database, at head with kronos's own users migration.
local users_url
local function users_db()
    if not users_url then
        users_url = fresh_db("bench_users")
        run { LUA, ROOT .. "/bench/startup.lua", users_url, MIGRATIONS, "init" }
    end
    return users_url
end

-- What a create run wrote: the count, the rows' content, and how many ids are v4 UUIDs.
local FINGERPRINT_SQL = [[
SELECT count(*) AS n, count(*) FILTER (WHERE substr(id::text, 15, 1) = '4') AS v4,
       count(*) FILTER (WHERE is_active) AS active,
       md5(string_agg(email || '|' || first_name || '|' || last_name, ',' ORDER BY email)) AS digest
  FROM users]]

local function truncate(url) query(url, "TRUNCATE users") end

local function created(url, what, n)
    local f = query(url, FINGERPRINT_SQL)[1]
    same(what .. ": rows", f.n, n)
    same(what .. ": v4 ids", f.v4, n)
    same(what .. ": active", f.active, n)
    return f.digest
end

-- One implementation's create run on an empty table; returns its time and checks the rows.
local function create_run(url, what, argv, n, digest)
    truncate(url)
    local r = run(argv)
    same(what .. ": rows reported", r.rows, n)
    local d = created(url, what, n)
    if digest then same(what .. ": same rows as kronos", d, digest) end
    return r.elapsed, d
end

function cases.create()
    local url, n = users_db(), N_CREATE
    local k, l, c, digest = {}, {}, {}, nil
    for i = 1, RUNS do
        rotated(i, {
            function() k[i], digest = create_run(url, "create kronos", kw(url, "create", n), n, digest) end,
            function() l[i], digest = create_run(url, "create LuaSQL", lw(url, "create", n), n, digest) end,
            function() c[i], digest = create_run(url, "create C", { PQBENCH, url, "create", n }, n, digest) end,
        })
    end
    add { case = ("create one by one (%dk, autocommit)"):format(n // 1000), unit = "rate", n = n,
        k = k, p = l, l = c, peer_name = "LuaSQL", limit_name = "C PQexecParams",
        target = ">= 1.0x LuaSQL, >= 0.9x C", met = function(vp, vl) return vp >= 1 and vl >= 0.9 end }
end

-- create_many of a list that exists before the clock starts (bench/kronos_worker.lua), against
-- the LuaSQL loop over the same ready list and C's COPY of fields made before its clock
-- (bench/pqbench.c): each side times its ids, its checking or formatting, the sending and the
-- server. The instruction row counts the timed client work alone (kr_users_create_many, and
-- pqbench's run_copy), per entry: the marginal between two batch sizes.
function cases.bulk()
    local url, n = users_db(), N_BULK
    local k, l, c, digest = {}, {}, {}, nil
    for i = 1, RUNS do
        rotated(i, {
            function() k[i], digest = create_run(url, "bulk kronos", kw(url, "create_many", n), n, digest) end,
            function() l[i], digest = create_run(url, "bulk LuaSQL", lw(url, "create_list", n), n, digest) end,
            function() c[i], digest = create_run(url, "bulk C COPY", { PQBENCH, url, "copy", n }, n, digest) end,
        })
    end
    add { case = ("bulk create (%dk)"):format(n // 1000), unit = "rate", n = n, k = k, p = l, l = c,
        peer_name = "LuaSQL loop", limit_name = "C COPY", target = ">= 12x LuaSQL, >= 0.7x C",
        met = function(vp, vl) return vp >= 12 and vl >= 0.7 end }
    local function per_entry(toggle, make)
        local small, big = 2000, 12000
        truncate(url)
        local a = cg_total { "--toggle-collect=" .. toggle, table.unpack(make(small)) }
        truncate(url)
        local b = cg_total { "--toggle-collect=" .. toggle, table.unpack(make(big)) }
        truncate(url)
        return (b - a) / (big - small)
    end
    local ki = per_entry("kr_users_create_many", function(m) return kw(url, "create_many", m) end)
    local ci = per_entry("run_copy*", function(m) return { PQBENCH, url, "copy", m } end)
    add { case = "bulk create: client instructions per entry (callgrind)", unit = "ir", k = { ki }, l = { ci },
        limit_name = "C COPY" }
end

-- Users as create makes them (created over time), and the same users as one COPY or create_many
-- leaves them (one created_at): users:list pages over both, interleaved, in two databases.
local function users_read_dbs(n)
    local url = users_db()
    truncate(url)
    run { PQBENCH, url, "copy", n }
    query(url, [[UPDATE users u SET created_at = s.t, updated_at = s.t
                   FROM (SELECT id, timestamptz '2026-01-01 00:00:00+00' + row_number() OVER () * interval '1 ms' AS t
                           FROM users) s WHERE u.id = s.id]])
    query(url, "VACUUM FULL users")
    query(url, "ANALYZE users")
    drop_db("bench_users_shared")
    assert(admin:exec("CREATE DATABASE bench_users_shared TEMPLATE bench_users"))
    local shared = url_for("bench_users_shared")
    query(shared, "UPDATE users SET created_at = timestamptz '2026-01-01 00:00:00+00'")
    query(shared, "VACUUM FULL users")
    query(shared, "ANALYZE users")
    return url, shared
end

function cases.read()
    local n = N_READ
    local url = users_read_dbs(n)
    -- the typed rows, kept in a table: the reads measure the clients, not md5() on the server
    query(url, "DROP TABLE IF EXISTS bench_typed")
    query(url, "CREATE TABLE bench_typed AS " .. C.typed_sql(n))
    query(url, "VACUUM ANALYZE bench_typed")
    local sides = {
        users = { k = {}, kj = {}, l = {}, c = {} },
        typed = { k = {}, kj = {}, cols = {}, colsj = {}, floor = {}, floorj = {}, floorc = {}, floorcj = {},
            l = {}, c = {} },
    }
    local checks = {}
    local function one(argv, what, key)
        local r = run(argv)
        same(what .. ": rows", r.rows, n)
        checks[key] = checks[key] or r.check
        same(what .. ": sum of lengths", r.check, checks[key])
        return r.elapsed
    end
    local u, t = sides.users, sides.typed
    for i = 1, RUNS do
        rotated(i, {
            function() u.k[i] = one(kw(url, "read_exec"), "read kronos exec", "users") end,
            function() u.kj[i] = one(on_jit(kw(url, "read_exec")), "read kronos exec on LuaJIT", "users") end,
            function() u.l[i] = one(lw(url, "read"), "read LuaSQL", "users") end,
            function() u.c[i] = one({ PQBENCH, url, "read", "0", C.READ_SQL }, "read C", "users") end,
            function() t.k[i] = one(kw(url, "typed", "table"), "typed kronos exec", "typed") end,
            function() t.kj[i] = one(on_jit(kw(url, "typed", "table")), "typed kronos exec on LuaJIT", "typed") end,
            function() t.cols[i] = one(kw(url, "typed_columns", "table"), "typed kronos exec_columns", "typed") end,
            function() t.colsj[i] = one(on_jit(kw(url, "typed_columns", "table")), "typed exec_columns on LuaJIT", "typed") end,
            function() t.floor[i] = one(fw(url, "named", "table"), "typed Lua floor", "typed") end,
            function() t.floorj[i] = one(on_jit(fw(url, "named", "table")), "typed Lua floor on LuaJIT", "typed") end,
            function() t.floorc[i] = one(fw(url, "columns", "table"), "typed Lua floor, columns", "typed") end,
            function() t.floorcj[i] = one(on_jit(fw(url, "columns", "table")), "typed floor, columns, LuaJIT", "typed") end,
            function() t.l[i] = one(lw(url, "typed", "table"), "typed LuaSQL", "typed") end,
            function() t.c[i] = one({ PQBENCH, url, "read", "0", C.TYPED_TABLE_SQL }, "typed C", "typed") end,
        })
    end
    add { case = ("read %dk typed rows, named (conn:exec)"):format(n // 1000), unit = "rate", n = n,
        k = t.k, p = t.l, l = t.floor, peer_name = "LuaSQL fetch", limit_name = "Lua floor",
        j = t.kj, jl = t.floorj, jl_name = "LuaJIT floor",
        target = ">= 1.7x LuaSQL, <= 1.15x the floor (CPU rows below)" }
    add { case = "read typed rows, compact (conn:exec_columns)", unit = "rate", n = n,
        k = t.cols, p = t.k, l = t.floorc, peer_name = "conn:exec", limit_name = "Lua floor, columns",
        j = t.colsj, jp = t.kj, jp_name = "conn:exec on LuaJIT", target = ">= 1.3x conn:exec",
        met = function(vp) return vp >= 1.3 end }
    add { case = "read typed rows: C limit", unit = "rate", n = n, k = t.c }
    add { case = ("read %dk users, conn:exec"):format(n // 1000), unit = "rate", n = n,
        k = u.k, p = u.l, l = u.c, peer_name = "LuaSQL fetch", limit_name = "C PQgetvalue",
        j = u.kj, jp = u.l, jp_name = "LuaSQL" }
    drop_db("bench_users_shared")
end

-- users:list in pages of 1000 over the same 100,000 users with distinct created_at values and
-- with one shared created_at (one create_many batch), the seed's indexes only, against LuaSQL's
-- one-shot read of them; and the same statements from C (pqbench page: the server's and libpq's
-- part of paging, the floor under kronos's) beside C's one-shot read (what paging itself costs).
function cases.paging()
    local n = N_READ
    local url, shared = users_read_dbs(n)
    local k, s, l, cd, cs, c1 = {}, {}, {}, {}, {}, {}
    local check
    local function one(argv, what)
        local r = run(argv)
        same(what .. ": rows", r.rows, n)
        check = check or r.check
        same(what .. ": sum of lengths", r.check, check)
        return r.elapsed
    end
    for i = 1, RUNS do
        rotated(i, {
            function() k[i] = one(kw(url, "read_list"), "users:list, distinct created_at") end,
            function() s[i] = one(kw(shared, "read_list"), "users:list, one created_at") end,
            function() l[i] = one(lw(url, "read"), "LuaSQL one-shot read") end,
            function() cd[i] = one({ PQBENCH, url, "page", "1000" }, "C pages, distinct created_at") end,
            function() cs[i] = one({ PQBENCH, shared, "page", "1000" }, "C pages, one created_at") end,
            function() c1[i] = one({ PQBENCH, url, "read", "0", C.READ_SQL }, "C one-shot read") end,
        })
    end
    add { case = "users:list pages of 1000, distinct created_at", unit = "rate", n = n,
        k = k, p = l, l = cd, peer_name = "LuaSQL one-shot read", limit_name = "C, same statements" }
    add { case = "users:list pages of 1000, one shared created_at", unit = "rate", n = n,
        k = s, p = l, l = k, peer_name = "LuaSQL one-shot read", limit_name = "distinct created_at",
        target = ">= 1.0x LuaSQL, <= 1.3x distinct", met = function(vp, vl) return vp >= 1 and vl >= 1 / 1.3 end }
    add { case = "users:list pages, one shared created_at, vs C", unit = "rate", n = n,
        k = s, l = cs, limit_name = "C, same statements" }
    add { case = "C pages, one shared created_at (the floor)", unit = "rate", n = n,
        k = cs, p = c1, l = cd, peer_name = "C one-shot read", limit_name = "C pages, distinct" }
    drop_db("bench_users_shared")
end

function cases.select1()
    local url, n = BASE_URL, N_SELECT1
    local k, l, c = {}, {}, {}
    for i = 1, RUNS do
        for _, x in ipairs {
            { k, kw(url, "select1", n) },
            { l, lw(url, "select1", n) },
            { c, { PQBENCH, url, "select1", n } } } do
            local r = run(x[2])
            same("select 1: round trips", r.rows, n)
            same("select 1: sum of results", r.check, n)
            x[1][i] = r.elapsed
        end
    end
    add { case = "conn:exec(\"select 1\") round trips", unit = "rate", n = n, k = k, p = l, l = c,
        peer_name = "LuaSQL", limit_name = "C PQexec" }
end

function cases.stream()
    local url, n = BASE_URL, N_STREAM
    local k, kt, l, kj, ktj, check = {}, {}, {}, {}, {}, nil
    for i = 1, RUNS do
        local r = run(kw(url, "stream", n))
        same("stream kronos: rows", r.rows, n)
        check = check or r.check
        same("stream kronos: sum of text lengths", r.check, check)
        k[i] = math.max(r.rss_kb, r.maxrss_kb) / 1024
        kt[i] = r.elapsed
        r = run(on_jit(kw(url, "stream", n)))
        same("stream kronos on LuaJIT: rows", r.rows, n)
        same("stream kronos on LuaJIT: sum of text lengths", r.check, check)
        kj[i] = math.max(r.rss_kb, r.maxrss_kb) / 1024
        ktj[i] = r.elapsed
        local p = run(lw(url, "stream", n))
        same("stream LuaSQL: rows", p.rows, n)
        same("stream LuaSQL: sum of text lengths", p.check, check)
        l[i] = math.max(p.rss_kb, p.maxrss_kb) / 1024
    end
    add { case = ("stream conn:rows, %dM typed rows: peak RSS"):format(n // 1000000), unit = "mb",
        k = k, p = l, peer_name = "LuaSQL cursor", target = "< 64 MB", j = kj, jp = l, jp_name = "LuaSQL",
        met = function(_, _, km) return km < 64 and median(kj) < 64 end }
    add { case = "stream conn:rows: rate", unit = "rate", n = n, k = kt, j = ktj }
end

-- Instruction counts (callgrind) per typed row: the marginal cost between two result sizes, so
-- process start, connect and the query's fixed cost cancel out. The Lua floor's count leaves out
-- its pre-making of the values (bench/floor.c floor_premake), which the clock leaves out too.
function cases.callgrind()
    local url = BASE_URL
    local small, big = 1000, 11000
    -- argv may start with env(1) settings: valgrind goes after them
    local function ir(argv, toggle)
        local out = WORK .. "/callgrind.out"
        local vg, i = {}, 1
        if argv[1] == "env" then
            vg = { "env", argv[2] }
            i = 3
        end
        for _, a in ipairs { "valgrind", "--tool=callgrind", "--callgrind-out-file=" .. out } do vg[#vg + 1] = a end
        if toggle then vg[#vg + 1] = "--toggle-collect=" .. toggle end
        for j = i, #argv do vg[#vg + 1] = argv[j] end
        local r = run(vg)
        os.remove(out)
        return assert(tonumber(r.output:match("Collected : (%d+)")), "no callgrind summary"), r
    end
    local function marginal(make, toggle)
        local a = ir(make(small), toggle)
        local b, r = ir(make(big), toggle)
        same("callgrind: rows", r.rows, big)
        return (b - a) / (big - small)
    end
    local function floor_ir(make)
        return marginal(make) - marginal(make, "floor_premake")
    end
    local k = marginal(function(n) return kw(url, "typed", n) end)
    local kc = marginal(function(n) return kw(url, "typed_columns", n) end)
    local kj = marginal(function(n) return on_jit(kw(url, "typed", n)) end)
    local kcj = marginal(function(n) return on_jit(kw(url, "typed_columns", n)) end)
    local f = floor_ir(function(n) return fw(url, "named", n) end)
    local fc = floor_ir(function(n) return fw(url, "columns", n) end)
    local fj = floor_ir(function(n) return on_jit(fw(url, "named", n)) end)
    local l = marginal(function(n) return lw(url, "typed", n) end)
    local c = marginal(function(n) return { PQBENCH, url, "read", "0", C.typed_sql(n) } end)
    local conv = ir(kw(url, "typed", big), "kr_pushrows_as") / big
    add { case = "CPU per typed row, whole client (callgrind)", unit = "ir", k = { k }, p = { l }, l = { c },
        peer_name = "LuaSQL", limit_name = "C PQgetvalue", j = { kj }, target = ">= 1.7x LuaSQL",
        met = function(vp) return vp >= 1.7 end }
    add { case = "CPU per typed row, named rows vs the Lua floor", unit = "ir", k = { k }, l = { f },
        limit_name = "Lua floor", j = { kj }, jl = { fj }, jl_name = "LuaJIT floor",
        target = "<= 1.15x the floor (>= 0.87x)", met = function(_, vl) return vl >= 1 / 1.15 end }
    add { case = "CPU per typed row, compact (exec_columns)", unit = "ir", k = { kc }, p = { k }, l = { fc },
        peer_name = "conn:exec", limit_name = "Lua floor, columns", j = { kcj }, jp = { kj },
        jp_name = "conn:exec on LuaJIT", target = ">= 1.3x conn:exec", met = function(vp) return vp >= 1.3 end }
    add { case = "CPU per typed row, building the rows only (kr_pushrows_as)", unit = "ir", k = { conv } }
    notes[#notes + 1] = "- A typed row is int4, text, int8, float8, bool, timestamptz, uuid, numeric "
        .. "(bench/common.lua typed_sql). Whole client = the marginal instruction count per row between "
        .. ("%d and %d rows: libpq reading the result, conversion, Lua tables, the worker's loop. "):format(small, big)
        .. "The Lua floor (bench/floor.c) builds the same tables from values converted beforehand, with "
        .. "the same Lua calls; its count leaves the converting out."
end

-- N single-row INSERTs: one round trip each against libpq's pipeline mode (issue #14). The C
-- rows give the protocol's ratio (a Sync per statement, as conn:pipeline's default, and one Sync
-- per 256); the kronos row, conn:pipeline against a conn:exec loop.
local N_PIPELINE = 20000
function cases.pipeline()
    local url, n = BASE_URL, N_PIPELINE
    local PIPEBENCH = WORK .. "/pipebench"
    local function pw(mode) return { LUA, ROOT .. "/bench/pipeline_worker.lua", url, mode, n } end
    local cl, c1, c256, kl, kp = {}, {}, {}, {}, {}
    local check = n * (n + 1) // 2
    local function one(argv)
        local r = run(argv)
        same("pipeline: rows inserted", r.rows, n)
        same("pipeline: sum of ids", r.check, check)
        return r.elapsed
    end
    for i = 1, RUNS do
        rotated(i, {
            function() cl[i] = one { PIPEBENCH, url, "loop", n } end,
            function() c1[i] = one { PIPEBENCH, url, "pipeline", n, 1 } end,
            function() c256[i] = one { PIPEBENCH, url, "pipeline", n, 256 } end,
            function() kl[i] = one(pw("loop")) end,
            function() kp[i] = one(pw("pipeline")) end,
        })
    end
    add { case = ("C pipeline, %dk inserts, Sync each"):format(n // 1000), unit = "rate", n = n, k = c1, p = cl,
        l = c256, peer_name = "C loop", limit_name = "C Sync/256", target = ">= 1.5x the loop",
        met = function(vp) return vp >= 1.5 end }
    add { case = ("conn:pipeline, %dk inserts"):format(n // 1000), unit = "rate", n = n, k = kp, p = kl,
        l = c1, peer_name = "conn:exec loop", limit_name = "C pipeline", target = ">= 1.5x the loop",
        met = function(vp) return vp >= 1.5 end }
end

---------------------------------------------------------------------------------------------
-- the run

-- N users written as single INSERTs: one conn:pipeline (a Sync per statement) against the
-- users:create loop (a round trip each, RETURNING the row), and the limit: the same INSERTs
-- pipelined from C (bench/pqbench.c create_pipeline), the same rows checked.
function cases.pipeline_users()
    local url, n = users_db(), N_PIPELINE
    local k, p, c, digest = {}, {}, {}, nil
    for i = 1, RUNS do
        rotated(i, {
            function() k[i], digest = create_run(url, "pipeline users", kw(url, "create_pipeline", n), n, digest) end,
            function() p[i], digest = create_run(url, "users:create loop", kw(url, "create", n), n, digest) end,
            function() c[i], digest = create_run(url, "C pipeline users", { PQBENCH, url, "create_pipeline", n }, n,
                digest) end,
        })
    end
    add { case = ("conn:pipeline of %dk user inserts"):format(n // 1000), unit = "rate", n = n, k = k, p = p,
        l = c, peer_name = "users:create loop", limit_name = "C pipeline, same INSERTs", target = ">= 1.4x the loop",
        met = function(vp) return vp >= 1.4 end }
end

local order = { "startup", "migrate500", "create", "bulk", "read", "paging", "select1", "stream", "callgrind", "pipeline",
    "pipeline_users" }
local wanted = {}
if ONLY then for name in ONLY:gmatch("[^,%s]+") do wanted[name] = true end end

io.write(("%-34s %-14s %-26s %-26s %-8s %-8s %s\n"):format("case", "kronos", "peer", "limit",
    "vs peer", "vs limit", "target"))
local started = C.now()
for _, name in ipairs(order) do
    if not ONLY or wanted[name] then
        local ok, err = pcall(cases[name])
        if not ok then fail_row(name, err) end
    end
end
local elapsed = C.now() - started
if users_url then drop_db("bench_users") end

---------------------------------------------------------------------------------------------
-- bench/results.md

local function sh(cmd)
    local p = io.popen(cmd .. " 2>/dev/null")
    local s = p:read("a"):gsub("%s+$", "")
    p:close()
    return s
end

local function machine()
    local cpu = sh("lscpu | sed -n 's/^Model name: *//p' | head -n 1")
    local mem = sh("free -g | awk '/^Mem:/ {print $2}'")
    return {
        ("- CPU: %s, %s cores (%s)"):format(cpu, sh("nproc"), sh("uname -srm")),
        ("- Memory: %s GiB; %s"):format(mem, sh("lscpu | sed -n 's/^Hypervisor vendor: *//p'") ~= ""
            and "a virtual machine shared with other work (noisy)" or "bare metal"),
        ("- OS: %s"):format(sh(". /etc/os-release && echo \"$PRETTY_NAME\"")),
        ("- PostgreSQL: %s, private cluster on 127.0.0.1 (fsync=off, as tools/pg.sh starts it), same machine")
            :format(query(BASE_URL, "SHOW server_version")[1].server_version),
        ("- Lua: %s; LuaSQL: lua-sql-postgres %s; Alembic: %s with SQLAlchemy %s, psycopg2 %s"):format(
            sh("lua5.4 -v"), sh("dpkg-query -W -f='${Version}' lua-sql-postgres"),
            sh("dpkg-query -W -f='${Version}' alembic"), sh("dpkg-query -W -f='${Version}' python3-sqlalchemy"),
            sh("dpkg-query -W -f='${Version}' python3-psycopg2")),
        ("- C: %s -O2, libpq %s"):format(sh("cc --version | head -n 1"), sh("pg_config --version")),
        ("- kronos: commit %s; run on %s; %d runs per median; the whole run took %.0f s"):format(
            sh("git -C " .. ROOT .. " rev-parse --short HEAD"), os.date("!%Y-%m-%d %H:%M UTC"), RUNS, elapsed),
    }
end

local md = {
    "# Benchmarks",
    "",
    "Written by `make bench` (bench/run.sh, bench/bench.lua). The columns kronos, peer and limit are",
    "medians over the runs. The runs are interleaved (kronos, peer, limit, kronos, ...) and each ratio is",
    "the median over runs of the other's cost divided by kronos's cost in the same run (time, memory or",
    "instructions): above 1, kronos is faster or lighter. Each case first checks that the implementations",
    "did the same work (row counts, row contents, the same schema read from pg_catalog) and reports an",
    "error instead of a number otherwise.",
    "",
    "## Machine",
    "",
}
for _, l in ipairs(machine()) do md[#md + 1] = l end
md[#md + 1] = ""
md[#md + 1] = "## Results"
md[#md + 1] = ""
md[#md + 1] = "| case | kronos | peer | limit | kronos vs peer | kronos vs limit | kronos on LuaJIT | target | |"
md[#md + 1] = "|---|---|---|---|---|---|---|---|---|"
for _, r in ipairs(results) do
    md[#md + 1] = ("| %s | %s | %s | %s | %s | %s | %s | %s | %s |"):format(r.case, r.kronos, r.peer, r.limit,
        r.vs_peer, r.vs_limit, r.jit, r.target, r.met)
end
md[#md + 1] = ""
md[#md + 1] = "## What each side runs"
md[#md + 1] = ""
for _, l in ipairs {
    "- no-op startup: `kronos upgrade` at head (the kronos program of bin/launcher.c, as installed;",
    "  Lua 5.4, and LuaJIT in its column) against `alembic upgrade head` of bench/alembic/ (the same",
    "  users table) and the psql program itself (`$(pg_config --bindir)/psql -c 'select 1'`, not",
    "  Debian's Perl wrapper), wall time from fork to exit; the script row runs `lua5.4 bin/kronos`.",
    "- 500 migrations: bench/gen500.lua writes 500 chained migrations (a table of 3 columns and an index",
    "  each) for kronos and for Alembic; each run upgrades a new database base -> head with",
    "  bench/startup.lua, with `alembic upgrade head`, and with `psql -1 -f` of kronos's offline SQL.",
    "- create, bulk, read, select 1, stream, pipeline: bench/kronos_worker.lua (Lua 5.4 and LuaJIT),",
    "  bench/luasql_worker.lua (lua-sql-postgres: literals escaped with `con:escape`, v4 UUIDs made in",
    "  Lua), bench/floor_worker.lua (the Lua floor, bench/floor.c) and bench/pqbench.c (libpq from C,",
    "  `cc -O2`, UUIDs from getrandom(2) 256 at a time, as kronos makes them, formatted by libuuid); the",
    "  time is measured inside each process, after connecting. The",
    "  same rows everywhere (bench/common.lua `user(i)`, `typed_sql`).",
} do md[#md + 1] = l end
md[#md + 1] = ""
md[#md + 1] = "## Notes"
md[#md + 1] = ""
for _, n in ipairs(notes) do md[#md + 1] = n end
local analysis = io.open(ROOT .. "/bench/analysis.md")
if analysis then
    md[#md + 1] = ""
    md[#md + 1] = analysis:read("a")
    analysis:close()
end

local text = table.concat(md, "\n") .. "\n"
if ONLY then
    local f = assert(io.open(WORK .. "/results.md", "w"))
    f:write(text)
    f:close()
    io.write("\n(subset run: written to bench/work/results.md, bench/results.md left alone)\n")
else
    local f = assert(io.open(ROOT .. "/bench/results.md", "w"))
    f:write(text)
    f:close()
    io.write(("\nwritten to bench/results.md (%.0f s)\n"):format(elapsed))
end
admin:close()
