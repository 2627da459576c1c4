-- Shared by the benchmark workers and the driver: the rows every implementation writes and the
-- queries every implementation reads, so that kronos, its peer and the C limit do the same work.
local benchlib = require "benchlib"

local C = {}

C.now = benchlib.now

-- The i-th bench user, the same in bench/pqbench.c.
function C.user(i)
    return ("user%07d@bench.example"):format(i), "First" .. i, "Last" .. i
end

-- The first n bench users as create_many takes them: { email =, first_name =, last_name = }.
function C.user_list(n)
    local list = {}
    for i = 1, n do
        local email, first, last = C.user(i)
        list[i] = { email = email, first_name = first, last_name = last }
    end
    return list
end

-- Every column of every user; email second (the checks sum its lengths, as pqbench does). No
-- ORDER BY: the server's sort would be the same for everyone and only blur the clients' costs.
C.READ_SQL = "SELECT id, email, first_name, last_name, is_active, profile_image_url, last_login, "
    .. "created_at, updated_at FROM users"

-- One typed row per g: int4, text, int8, float8, bool, timestamptz, uuid, numeric.
function C.typed_sql(n)
    return ("SELECT g::int4 AS i4, 'row ' || g AS t, g::int8 * 1000003 AS i8, g / 7.0::float8 AS f8, "
        .. "g %% 2 = 0 AS b, timestamptz '2026-01-01 00:00:00+00' + g * interval '1 second' AS ts, "
        .. "md5(g::text)::uuid AS u, (g / 3.0)::numeric(14,4) AS n FROM generate_series(1, %d) g"):format(n)
end

-- The same typed rows kept in a table (bench.lua makes it), so that a read measures the client,
-- not the server computing md5, numeric and float8 text for every row.
C.TYPED_TABLE_SQL = "SELECT i4, t, i8, f8, b, ts, u, n FROM bench_typed"

-- The typed query for a worker's N argument: a number of generated rows, or "table".
function C.typed_query(what)
    return what == "table" and C.TYPED_TABLE_SQL or C.typed_sql(assert(tonumber(what), "N or table"))
end

-- Peak resident set of this process, in kB.
function C.vmhwm()
    local f = io.open("/proc/self/status")
    local kb = f and tonumber(f:read("a"):match("VmHWM:%s*(%d+)"))
    if f then f:close() end
    return kb or 0
end

-- The one line a worker prints for the driver.
function C.report(elapsed, rows, check, extra)
    local line = ("elapsed=%.6f rows=%d check=%d"):format(elapsed, rows, check)
    for k, v in pairs(extra or {}) do line = line .. (" %s=%s"):format(k, v) end
    io.write(line, "\n")
end

return C
