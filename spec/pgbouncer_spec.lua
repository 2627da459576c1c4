-- kronos behind a real PgBouncer in transaction pooling mode (tools/pgbouncer.sh), in front of
-- the test server. A missing pgbouncer fails this file: nothing is skipped.
local H = require "spec.helper"
local kronos = require "kronos"

local function trim(s) return (s:gsub("^%s+", ""):gsub("%s+$", "")) end

-- A shell word.
local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local function sh(cmd)
    local code, out = H.run(cmd)
    assert(code == 0, ("command failed (%s): %s\n%s"):format(tostring(code), cmd, out))
    return trim(out)
end

-- Runs `script` (Lua source, given the bouncer URL as ...) in `n` interpreter processes at
-- once; returns their exit codes and outputs. Every process is bounded by `timeout`.
local function run_parallel(dir, n, script)
    local file = dir .. "/parallel.lua"
    local f = assert(io.open(file, "w"))
    f:write(script)
    f:close()
    local cmd = {}
    for i = 1, n do
        cmd[#cmd + 1] = ("(timeout 60 %s %s > %s/out.%d 2>&1; echo $? > %s/rc.%d) &")
            :format(q(H.lua), q(file), q(dir), i, q(dir), i)
    end
    cmd[#cmd + 1] = "wait"
    sh(table.concat(cmd, " "))
    local codes, outs = {}, {}
    for i = 1, n do
        codes[i] = tonumber(sh(("cat %s/rc.%d"):format(q(dir), i)))
        outs[i] = sh(("cat %s/out.%d"):format(q(dir), i))
    end
    return codes, outs
end

describe("behind PgBouncer in transaction pooling mode", function()
    local dir, direct, dbname, url

    setup(function()
        direct, dbname = H.fresh_db("pgb")
        -- Not UTC, so every kronos connection sends its SET TimeZone (outside a transaction).
        local admin = assert(kronos.connect(direct))
        assert(admin:exec("ALTER DATABASE " .. admin:escape_identifier(dbname) .. " SET TimeZone TO 'America/New_York'"))
        admin:close()
        dir = sh("mktemp -d /tmp/kronos-pgb.XXXXXX")
        url = sh(("sh %s/tools/pgbouncer.sh start %s %s"):format(q(H.root), q(dir), q(direct)))
        assert(url:match("^postgresql://"), url)
    end)

    teardown(function()
        if dir then
            H.run(("sh %s/tools/pgbouncer.sh stop %s; rm -rf %s"):format(q(H.root), q(dir), q(dir)))
        end
        if dbname then H.drop_db(dbname) end
    end)

    it("runs in transaction mode: two clients share one server connection", function()
        assert.matches("pool_mode = transaction", sh("cat " .. q(dir .. "/pgbouncer.ini")), 1, true)
        local a = assert(kronos.connect(url))
        local b = assert(kronos.connect(url))
        finally(function() a:close(); b:close() end)
        local pa = assert(a:exec("SELECT pg_backend_pid() AS pid"))[1].pid
        local pb = assert(b:exec("SELECT pg_backend_pid() AS pid"))[1].pid
        -- b ran after a released its server connection: the pooler reused it.
        assert.equals(pa, pb)
    end)

    it("keeps kronos's session settings (UTC) when clients trade server connections", function()
        local conns = {}
        finally(function() for _, c in ipairs(conns) do c:close() end end)
        -- More clients than the pool has server connections (8), interleaved.
        for i = 1, 12 do conns[i] = assert(kronos.connect(url)) end
        for round = 1, 3 do
            for i, c in ipairs(conns) do
                local rows = assert(c:exec(
                    "SELECT current_setting('TimeZone') AS tz, $1::timestamptz AS t, $2::int AS n",
                    "2026-01-02 03:04:05.123456+00", i * round))
                assert.equals("UTC", rows[1].tz)
                assert.equals("2026-01-02T03:04:05.123456Z", rows[1].t)
                assert.equals(i * round, rows[1].n)
            end
        end
    end)

    it("runs parameterised statements, scripts, streams and nested transactions", function()
        local c = assert(kronos.connect(url))
        finally(function() c:close() end)
        assert(c:script("CREATE TABLE pgb_t (id int PRIMARY KEY, name text); INSERT INTO pgb_t VALUES (1, 'one')"))
        local n = c:transaction(function()
            assert(c:exec("INSERT INTO pgb_t VALUES ($1, $2)", 2, "two"))
            local ok = pcall(c.transaction, c, function()
                assert(c:exec("INSERT INTO pgb_t VALUES ($1, $2)", 3, "three"))
                error("undo the savepoint")
            end)
            assert.is_false(ok)
            return assert(c:exec("SELECT count(*) AS n FROM pgb_t"))[1].n
        end)
        assert.equals(2, n)
        local names = {}
        for row in c:rows("SELECT name FROM pgb_t ORDER BY id") do names[#names + 1] = row.name end
        assert.same({ "one", "two" }, names)
        local rows, err = c:exec("INSERT INTO pgb_t VALUES ($1, $2)", 1, "again")
        assert.is_nil(rows)
        assert.equals("23505", err.sqlstate)
        -- the failed statement left nothing behind: the next one works on any server connection
        assert.equals(2, assert(c:exec("SELECT count(*) AS n FROM pgb_t"))[1].n)
    end)
end)
