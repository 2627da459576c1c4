-- Faults against the real server: a migrating backend terminated, the lock holder killed with
-- SIGKILL, the server unreachable, a connection lost during a users call, a migration failing
-- in the middle of a run, and (last) the server restarted with -m immediate mid-migration.
-- Migrations that must be interrupted run in child processes; this process plays the admin.
local kronos = require "kronos"
local migrate = require "kronos.migrate"
local H = require "spec.helper"

local shell_quote, write = H.shell_quote, H.write_file
local function tmpdir() return H.tmpdir("faults") end

-- A migration file: revision, its parent, a body for up (Lua source using op), a table to drop.
local function migration(dir, file, rev, down, up_body, down_body)
    write(dir .. "/" .. file, ([[
return {
    revision = %q,
    down_revision = %s,
    message = %q,
    up = function(op)
%s
    end,
    down = function(op)
%s
    end,
}
]]):format(rev, down and ("%q"):format(down) or "nil", "fault probe " .. rev, up_body, down_body or ""))
end

local function create(name)
    return ('        op.create_table(%q, {{ name = "id", type = "integer" }})'):format(name)
end

-- The child: runs migrate.upgrade and reports the error's fields on stdout, one per line.
local CHILD = [[
local migrate = require "kronos.migrate"
local ok, err = pcall(migrate.upgrade, { url = arg[1], dir = arg[2], lock_timeout = "30s" })
if ok then print("OK " .. table.concat(err, ",")) os.exit(0) end
if type(err) == "table" then
    print("CODE=" .. tostring(err.code))
    print("FILE=" .. tostring(err.file))
    print("MSG=" .. tostring(err.message))
else
    print("RAISED=" .. tostring(err))
end
os.exit(1)
]]

-- Starts a child Lua process in the background; returns a handle whose :finish() -> code, output.
local function spawn(env, script, ...)
    local args = {}
    for _, a in ipairs({ ... }) do args[#args + 1] = shell_quote(a) end
    local cmd = ("%s %s %s %s 2>&1; echo \"::$?\""):format(env or "", H.lua, shell_quote(script), table.concat(args, " "))
    local p = assert(io.popen(cmd))
    return {
        finish = function()
            local out = p:read("a")
            p:close()
            return tonumber(out:match("::(%d+)%s*$")), (out:gsub("::%d+%s*$", ""))
        end,
    }
end

-- Polls fn until it returns a true value; the bound only keeps a broken run from hanging.
local function wait_for(what, fn)
    for _ = 1, 600 do
        local v = fn()
        if v then return v end
        os.execute("sleep 0.05")
    end
    error("timed out waiting for " .. what)
end

local function tables_of(db)
    local names = {}
    for _, r in ipairs(assert(db:exec([[SELECT tablename FROM pg_tables WHERE schemaname = 'public'
        AND tablename <> 'kronos_version' ORDER BY tablename]]))) do
        names[#names + 1] = r.tablename
    end
    return names
end

local function current(url, dir)
    local revs = migrate.current({ url = url, dir = dir })
    table.sort(revs)
    return revs
end

describe("faults", function()
    local url, dbname, dir, child, admin

    before_each(function()
        url, dbname = H.fresh_db("faults")
        dir = tmpdir()
        child = dir .. "/child.lua"
        write(child, CHILD)
        assert(os.execute("mkdir " .. shell_quote(dir .. "/m")))
        admin = assert(kronos.connect(H.base_url))
    end)

    after_each(function()
        if admin:status() ~= "ok" then admin:reset() end
        admin:close()
        H.drop_db(dbname)
        os.execute("rm -rf " .. shell_quote(dir))
    end)

    -- r0 (applied beforehand), r1 (quick), r2 (creates a table, then a long statement).
    local function long_run(app)
        local m = dir .. "/m"
        migration(m, "r0.lua", "r0", nil, create("t0"), '        op.drop_table("t0")')
        assert.are.same({ "r0" }, migrate.upgrade({ url = url, dir = m }))
        migration(m, "r1.lua", "r1", "r0", create("t1"), '        op.drop_table("t1")')
        migration(m, "r2.lua", "r2", "r1", create("t2") .. [[

        if os.getenv("KRONOS_FAULT_SLOW") then op.execute("SELECT pg_sleep(60)") end]], '        op.drop_table("t2")')
        return m, url .. "?application_name=" .. app
    end

    local function the_sleeping_backend(app)
        return wait_for("the migration's long statement", function()
            local rows = assert(admin:exec([[SELECT pid FROM pg_stat_activity
                WHERE application_name = $1 AND query LIKE '%pg_sleep%' AND state = 'active']], app))
            return rows[1] and rows[1].pid
        end)
    end

    local function assert_before_and_retry(m, out)
        local db = assert(kronos.connect(url))
        assert.are.same({ "t0" }, tables_of(db)) -- none of r1's or r2's objects
        db:close()
        assert.are.same({ "r0" }, current(url, m), out)
        -- nothing to unlock or clean: the next upgrade just runs
        assert.are.same({ "r1", "r2" }, migrate.upgrade({ url = url, dir = m }))
        assert.are.same({ "r2" }, current(url, m))
        db = assert(kronos.connect(url))
        assert.are.same({ "t0", "t1", "t2" }, tables_of(db))
        db:close()
    end

    it("a migrating backend terminated mid-migration: connection error, revision unchanged, next upgrade works", function()
        local app = "kronos-fault-" .. kronos.uuid():sub(1, 8)
        local m, app_url = long_run(app)
        local proc = spawn("KRONOS_FAULT_SLOW=1", child, app_url, m)
        local pid = the_sleeping_backend(app)
        assert.is_true(assert(admin:exec("SELECT pg_terminate_backend($1) AS ok", pid))[1].ok)
        local code, out = proc.finish()
        assert.are.equal(1, code, out)
        assert.matches("CODE=connection\n", out, 1, true)
        assert.matches("FILE=[^\n]*r2%.lua\n", out)
        assert.matches("MSG=[^\n]*r2%.lua[^\n]*terminat", out)
        assert_before_and_retry(m, out)
    end)

    it("the lock holder killed with SIGKILL: the waiting processes go on and finish", function()
        local m = dir .. "/m"
        local fifo = dir .. "/gate"
        assert(os.execute("mkfifo " .. shell_quote(fifo)))
        migration(m, "r1.lua", "r1", nil, create("t1") .. [[

        local gate = os.getenv("KRONOS_FAULT_GATE")
        -- the holder blocks here, inside the transaction (op.db: not in upgrade's DDL check, which runs up offline)
        if gate and op.db then io.open(gate, "r"):read("*a") end]])
        migration(m, "r2.lua", "r2", "r1", create("t2"))
        local app = "kronos-holder-" .. kronos.uuid():sub(1, 8)
        local pidfile = dir .. "/holder.pid"
        -- exec: the pid written is the Lua process's own, the one that holds the session
        local holder = io.popen(("sh -c 'echo $$ > %s; exec env KRONOS_FAULT_GATE=%s %s %s %s %s' >/dev/null 2>&1"):format(
            pidfile, fifo, H.lua, shell_quote(child), shell_quote(url .. "?application_name=" .. app), m))
        wait_for("the holder inside its migration", function()
            local r = assert(admin:exec([[SELECT count(*) AS n FROM pg_stat_activity a JOIN pg_locks l ON l.pid = a.pid
                WHERE a.application_name = $1 AND a.state = 'idle in transaction'
                  AND l.locktype = 'advisory' AND l.granted]], app))
            return r[1].n == 1
        end)
        local waiters = {}
        local wapp = "kronos-waiter-" .. kronos.uuid():sub(1, 8)
        for i = 1, 3 do waiters[i] = spawn(nil, child, url .. "?application_name=" .. wapp, m) end
        -- a waiter polls the lock outside any transaction: once it has tried, it keeps trying
        wait_for("three processes waiting on the migration lock", function()
            local r = assert(admin:exec([[SELECT count(*) AS n FROM pg_stat_activity WHERE application_name = $1
                AND (query LIKE '%pg_try_advisory%' OR query LIKE '%pg_locks%' OR query = 'ROLLBACK')]], wapp))
            return r[1].n == 3
        end)
        local f = assert(io.open(pidfile))
        local pid = assert(tonumber(f:read("*l")))
        f:close()
        assert(os.execute("kill -KILL " .. pid))
        holder:close()
        local applied = {}
        for i = 1, 3 do
            local code, out = waiters[i].finish()
            assert.are.equal(0, code, out)
            applied[#applied + 1] = out:match("^OK (%S*)")
        end
        table.sort(applied)
        -- exactly one waiter applied both migrations; the others found nothing to do
        assert.are.same({ "", "", "r1,r2" }, applied)
        assert.are.same({ "r2" }, current(url, m))
        local r = assert(admin:exec("SELECT count(*) AS n FROM pg_locks WHERE locktype = 'advisory'"))
        assert.are.equal(0, r[1].n)
    end)

    it("the server unreachable at start: connect fails within connect_timeout, the CLI exits 1", function()
        -- a closed port and a socket directory that does not exist: refused at once
        local started = os.time()
        local c, err = kronos.connect("postgresql://postgres@127.0.0.1:1/postgres?connect_timeout=2")
        assert.is_nil(c)
        assert.are.equal("connection", err.code)
        assert.matches('connection to server at "127.0.0.1", port 1 failed', err.message, 1, true)
        c, err = kronos.connect({ host = dir .. "/nosocket", dbname = "postgres", connect_timeout = 2 })
        assert.is_nil(c)
        assert.are.equal("connection", err.code)
        assert.matches("No such file or directory", err.message, 1, true)
        -- a server that accepts the TCP connection and never answers: a stopped postmaster.
        -- libpq gives up after connect_timeout (2 s); the bound below only catches a hang.
        local pgdir = os.getenv("KRONOS_PGDIR")
        if pgdir then
            local f = assert(io.open(pgdir .. "/data/postmaster.pid"))
            local postmaster = assert(tonumber(f:read("*l")))
            f:close()
            local port = H.base_url:match(":(%d+)/")
            started = os.time()
            assert(os.execute("kill -STOP " .. postmaster))
            local silent = ("postgresql://postgres@127.0.0.1:%s/postgres?connect_timeout=2"):format(port)
            local ok, c2, err2 = pcall(kronos.connect, silent)
            os.execute("kill -CONT " .. postmaster)
            assert.is_true(ok, c2)
            assert.is_nil(c2)
            assert.are.equal("connection", err2.code)
            assert.matches("timeout expired", err2.message, 1, true)
            assert.is_true(os.time() - started <= 10, "connect did not give up after connect_timeout")
        end
        local code, out = H.run(("cd %s && %s bin/kronos current -d %s"):format(shell_quote(H.root), H.lua,
            shell_quote("postgresql://postgres@127.0.0.1:1/postgres?connect_timeout=2")))
        assert.are.equal(1, code, out)
        assert.matches("port 1 failed", out, 1, true)
        assert.is_true(select(2, out:gsub("\n", "")) <= 1, "one line on stderr: " .. out)
        assert.is_true(os.time() - started <= 30)
    end)

    it("the connection lost during a users call: nil, err (connection); reset reconnects", function()
        local db = assert(kronos.connect(url))
        assert(migrate.upgrade({ db = db, dir = H.root .. "/migrations" }))
        local users = kronos.users(db)
        local u = assert(users:create({ email = "fault@example.com" }))
        assert(admin:exec("SELECT pg_terminate_backend($1)", db:backend_pid()))
        local got, err = users:get(u.id)
        assert.is_nil(got)
        assert.is_true(kronos.is_error(err))
        assert.are.equal("connection", err.code)
        assert.are.equal("bad", db:status())
        -- the other methods fail the same way, and nothing crashes
        local n, err2 = users:count({})
        assert.is_nil(n)
        assert.are.equal("connection", err2.code)
        assert.is_true(db:reset())
        assert.are.equal("ok", db:status())
        assert.are.same(u, users:get(u.id))
        assert.are.equal(1, users:count({}))
        db:close()
    end)

    describe("a migration failing third in a run of five", function()
        local function five(m, failing)
            local prev
            for i = 1, 5 do
                local rev = "f" .. i
                local body = create("t" .. i)
                if i == 3 then body = body .. "\n" .. failing end
                migration(m, rev .. ".lua", rev, prev, body, ('        op.drop_table("t%d")'):format(i))
                prev = rev
            end
        end
        local failures = {
            { "a Lua error", '        error("boom in the third migration")', "boom in the third migration" },
            { "an SQL error", '        op.execute("INSERT INTO no_such_table VALUES (1)")', "no_such_table" },
        }
        for _, case in ipairs(failures) do
            local what, body, cause = case[1], case[2], case[3]

            it(("(%s) leaves the database unchanged with the default whole-run transaction"):format(what), function()
                local m = dir .. "/m"
                five(m, body)
                local ok, err = pcall(migrate.upgrade, { url = url, dir = m })
                assert.is_false(ok)
                assert.is_true(kronos.is_error(err))
                assert.are.equal("f3", err.revision)
                assert.matches("f3%.lua$", err.file)
                assert.matches("f3.lua", err.message, 1, true)
                assert.matches(cause, err.message, 1, true)
                if what == "an SQL error" then assert.are.equal("42P01", err.sqlstate) end
                local db = assert(kronos.connect(url))
                assert.are.same({}, tables_of(db))
                db:close()
                assert.are.same({}, current(url, m))
            end)

            it(("(%s) keeps the earlier ones with one transaction per migration"):format(what), function()
                local m = dir .. "/m"
                five(m, body)
                local ok, err = pcall(migrate.upgrade, { url = url, dir = m, transaction_per_migration = true })
                assert.is_false(ok)
                assert.are.equal("f3", err.revision)
                assert.matches("f3.lua", err.message, 1, true)
                assert.matches(cause, err.message, 1, true)
                local db = assert(kronos.connect(url))
                assert.are.same({ "t1", "t2" }, tables_of(db))
                db:close()
                assert.are.same({ "f2" }, current(url, m))
            end)
        end
    end)

    -- Last: the restart drops every session on the server. It ends with the server accepting
    -- connections again, so the spec files after this one are unaffected.
    it("the server restarted (-m immediate) mid-migration: connection error, revision unchanged, next upgrade works", function()
        local pgdir = os.getenv("KRONOS_PGDIR")
        if not pgdir then
            pending("needs the harness's own server (KRONOS_PGDIR) to restart")
            return
        end
        local app = "kronos-restart-" .. kronos.uuid():sub(1, 8)
        local m, app_url = long_run(app)
        -- the harness runs with synchronous_commit=off: make r0's commit durable before the crash
        assert(admin:exec("CHECKPOINT"))
        local proc = spawn("KRONOS_FAULT_SLOW=1", child, app_url, m)
        the_sleeping_backend(app)
        local code, out = H.run(("sh %s/tools/pg.sh restart-immediate %s"):format(shell_quote(H.root), shell_quote(pgdir)))
        assert.are.equal(0, code, out)
        code, out = proc.finish()
        assert.are.equal(1, code, out)
        assert.matches("CODE=connection\n", out, 1, true)
        assert.matches("FILE=[^\n]*r2%.lua\n", out)
        wait_for("the server to accept connections", function()
            local c = kronos.connect(url)
            if c then c:close() end
            return c ~= nil
        end)
        assert_before_and_retry(m, out)
        -- admin's session died with the restart
        assert.are.equal("connection", select(2, admin:exec("SELECT 1")).code)
        assert.is_true(admin:reset())
    end)
end)
