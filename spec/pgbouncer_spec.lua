-- kronos behind a real PgBouncer in transaction pooling mode (tools/pgbouncer.sh), in front of
-- the test server. A missing pgbouncer fails this file: nothing is skipped.
local H = require "spec.helper"
local kronos = require "kronos"

local q, sh = H.shell_quote, H.sh

-- Runs `script` (Lua source; os.getenv("PGB_URL") is `url`) in `n` interpreter processes
-- at once; returns their exit codes and outputs. Every process is bounded by `timeout`.
local function run_parallel(dir, n, script, url)
    local file = dir .. "/parallel.lua"
    local f = assert(io.open(file, "w"))
    f:write(script)
    f:close()
    local cmd = {}
    for i = 1, n do
        cmd[#cmd + 1] = ("(PGB_URL=%s timeout 60 %s %s > %s/out.%d 2>&1; echo $? > %s/rc.%d) &")
            :format(q(url), q(H.lua), q(file), q(dir), i, q(dir), i)
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

-- The URL of database `name` through the bouncer whose URL is `url`.
local function bouncer_url_for(url, name)
    local head, query = url:match("^(postgres%a*://[^/?]*)/?[^?]*(.*)$")
    return head .. "/" .. name .. query
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
        local conns, ny = {}, nil
        finally(function()
            for _, c in ipairs(conns) do c:close() end
            if ny then ny:close() end
        end)
        for i = 1, 6 do conns[i] = assert(kronos.connect(url)) end
        -- A client that leaves the server connections it uses in New York time (the database's
        -- default anyway): PgBouncer must put kronos's UTC back before each kronos statement.
        ny = assert(kronos.connect(url))
        assert(ny:exec("SET TimeZone TO 'America/New_York'"))
        local ny_servers, kronos_servers = {}, {}
        local function check(c, n)
            local rows = assert(c:exec(
                "SELECT current_setting('TimeZone') AS tz, $1::timestamptz AS t, $2::int AS n",
                "2026-01-02 03:04:05.123456+00", n))
            assert.same({ tz = "UTC", t = "2026-01-02T03:04:05.123456Z", n = n }, rows[1])
            kronos_servers[assert(c:exec("SELECT pg_backend_pid() AS p"))[1].p] = true
        end
        local function check_ny()
            local row = assert(ny:exec("SELECT current_setting('TimeZone') AS tz, pg_backend_pid() AS p"))[1]
            assert.equals("America/New_York", row.tz)
            ny_servers[row.p] = true
        end
        for round = 1, 3 do
            for i, c in ipairs(conns) do
                check_ny()
                check(c, i * round)
                -- c holds its server connection for the transaction: the others take other ones
                c:transaction(function()
                    check(c, -i)
                    check(conns[i % #conns + 1], round)
                    check_ny()
                end)
            end
        end
        -- the same server connections served both time zones
        local shared = 0
        for p in pairs(ny_servers) do if kronos_servers[p] then shared = shared + 1 end end
        assert.is_true(shared >= 2)
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

    it("upgrades from several processes at once, then downgrades", function()
        local _, name = H.fresh_db("pgbmig")
        local burl = bouncer_url_for(url, name)
        finally(function() H.drop_db(name) end)
        local migrations = H.root .. "/migrations"
        local codes, outs = run_parallel(dir, 6, ([[
            local migrate = require "kronos.migrate"
            local ok, applied = pcall(migrate.upgrade, { url = os.getenv("PGB_URL"), dir = %q })
            if not ok then io.stderr:write(tostring(applied), "\n"); os.exit(1) end
            io.write("applied ", #applied, "\n")
        ]]):format(migrations), burl)
        local total = 0
        for i = 1, 6 do
            assert.equals(0, codes[i], outs[i])
            total = total + tonumber(outs[i]:match("^applied (%d+)$"))
        end
        assert.equals(1, total) -- one process applied the migration, the others found it done
        local migrate = require "kronos.migrate"
        assert.same({ "4f1c2a9e7b30" }, migrate.current { url = burl, dir = migrations })
        assert.is_true(migrate.check { url = burl, dir = migrations })
        local db = assert(kronos.connect(burl))
        local n = assert(db:exec("SELECT count(*) AS n FROM kronos_version"))[1].n
        db:close()
        assert.equals(1, n)

        assert.same({ "4f1c2a9e7b30" }, migrate.downgrade { url = burl, dir = migrations, target = "base" })
        assert.same({}, migrate.current { url = burl, dir = migrations })
        db = assert(kronos.connect(burl))
        local users = assert(db:exec("SELECT to_regclass('users') IS NULL AS gone"))[1].gone
        db:close()
        assert.is_true(users)
        -- and back up: the schema round-trips through the pooler
        assert.same({ "4f1c2a9e7b30" }, migrate.upgrade { url = burl, dir = migrations })
    end)

    it("runs every users method", function()
        local _, name = H.fresh_db("pgbusers")
        local burl = bouncer_url_for(url, name)
        local db
        finally(function()
            if db then db:close() end
            H.drop_db(name)
        end)
        db = assert(kronos.connect(burl))
        assert.same({ "4f1c2a9e7b30" }, require("kronos.migrate").upgrade { db = db, dir = H.root .. "/migrations" })
        local users = kronos.users(db)

        local ada = assert(users:create { email = "Ada@Example.com", first_name = "Ada" })
        assert.equals("ada@example.com", ada.email)
        assert.same(ada, assert(users:get(ada.id)))
        assert.same(ada, assert(users:find_by_email("ada@example.com")))
        local none, err = users:create { email = "ada@example.com" }
        assert.is_nil(none)
        assert.equals("duplicate_email", err.code)
        none, err = users:create { email = "no" }
        assert.is_nil(none)
        assert.equals("invalid_email", err.code)

        local updated = assert(users:update(ada.id, { last_name = "Lovelace" }))
        assert.equals("Lovelace", updated.last_name)
        assert.is_false(assert(users:deactivate(ada.id)).is_active)
        assert.is_true(assert(users:activate(ada.id)).is_active)
        local logged = assert(users:record_login(ada.id))
        assert.matches("^%d%d%d%d%-%d%d%-%d%dT[%d:.]+Z$", logged.last_login)

        local batch = {}
        for i = 1, 5 do batch[i] = { email = ("batch%d@example.com"):format(i) } end
        assert.equals(5, assert(users:create_many(batch)))
        assert.equals(6, assert(users:count()))
        assert(users:deactivate(assert(users:find_by_email("batch1@example.com")).id))
        assert.equals(5, assert(users:count { active = true }))

        -- pages of 4 over several server connections' worth of clients
        local seen, after, pages = {}, nil, 0
        repeat
            local page, next_cursor = users:list { limit = 4, after = after }
            assert(page, next_cursor)
            for _, u in ipairs(page) do
                assert.is_nil(seen[u.id])
                seen[u.id] = true
            end
            after, pages = next_cursor, pages + 1
        until not after or pages > 5
        local n = 0
        for _ in pairs(seen) do n = n + 1 end
        assert.equals(6, n)
        assert.equals(2, pages)

        assert.is_true(assert(users:delete(ada.id)))
        assert.is_nil(users:get(ada.id))
        assert.equals(5, assert(users:count()))
    end)

    it("never leaves kronos's prepared statements on server connections shared by clients", function()
        local _, name = H.fresh_db("pgbprep")
        local burl = bouncer_url_for(url, name)
        local conns = {}
        finally(function()
            for _, c in ipairs(conns) do c:close() end
            H.drop_db(name)
        end)
        for i = 1, 4 do conns[i] = assert(kronos.connect(burl)) end
        require("kronos.migrate").upgrade { db = conns[1], dir = H.root .. "/migrations" }
        local servers = {}
        local function on(c, fn)
            local users = kronos.users(c)
            return fn(users)
        end
        for round = 1, 25 do
            for i, c in ipairs(conns) do
                local email = ("u%d.%d@example.com"):format(i, round)
                -- c holds one server connection for the transaction; the next client takes another
                c:transaction(function()
                    local u = on(c, function(users) return assert(users:create { email = email, first_name = "N" }) end)
                    local other = conns[i % #conns + 1]
                    assert(on(other, function(users) return users:count() end))
                    assert.same(u, on(c, function(users) return assert(users:get(u.id)) end))
                    assert.same(u, on(c, function(users) return assert(users:find_by_email(email)) end))
                    servers[assert(c:exec("SELECT pg_backend_pid() AS p"))[1].p] = true
                    servers[assert(other:exec("SELECT pg_backend_pid() AS p"))[1].p] = true
                end)
                assert(on(c, function(users) return users:update(
                    assert(users:find_by_email(email)).id, { last_name = "L" .. round }) end))
                local left = assert(c:exec("SELECT count(*) AS n FROM pg_prepared_statements WHERE name LIKE 'kronos%'"))
                assert.equals(0, left[1].n)
            end
        end
        local n = 0
        for _ in pairs(servers) do n = n + 1 end
        assert.is_true(n >= 2)
        assert.equals(100, assert(kronos.users(conns[2]):count()))
    end)

    it("runs conn:prepare statements as unnamed ones, pipelines and COPY both ways", function()
        local a = assert(kronos.connect(url))
        local b = assert(kronos.connect(url))
        finally(function() a:close(); b:close() end)
        assert(a:exec("CREATE TABLE IF NOT EXISTS pgb_items (id int PRIMARY KEY, v text)"))
        assert(a:exec("TRUNCATE pgb_items"))
        local st = assert(a:prepare("SELECT $1::int * 2 AS v"))
        assert.matches("unnamed", tostring(st))
        for i = 1, 10 do
            assert.equals(i * 2, st:exec(i)[1].v)
            assert(b:exec("SELECT 1")) -- b takes the server connection a used in between
        end
        local got = {}
        for row in st:rows(21) do got[#got + 1] = row.v end
        assert.same({ 42 }, got)
        st:close()
        local r = assert(a:pipeline(function(p)
            for i = 1, 50 do p:exec("INSERT INTO pgb_items VALUES ($1, $2)", i, "p" .. i) end
            p:exec("INSERT INTO pgb_items VALUES (1, 'dup')")
        end))
        assert.equals(1, r.failed)
        assert.equals("unique_violation", r[51].code)
        local ok, err = a:pipeline(function(p)
            p:exec("INSERT INTO pgb_items VALUES (100, 'x')")
            p:exec("INSERT INTO pgb_items VALUES (100, 'x')")
        end, { transaction = true })
        assert.is_nil(ok)
        assert.equals("unique_violation", err.code)
        assert.equals(2, assert(b:copy_from("COPY pgb_items FROM STDIN", { { 200, "c1" }, { 201, "c2" } })))
        local n = 0
        for row in a:copy_to("COPY (SELECT id, v FROM pgb_items ORDER BY id) TO STDOUT") do
            n = n + 1
            assert.is_string(row[2])
        end
        assert.equals(52, n)
        assert.equals(52, b:exec("SELECT count(*) AS n FROM pgb_items")[1].n)
    end)

    it("cannot deliver LISTEN notifications: the LISTEN stays on a pooled server connection", function()
        local a = assert(kronos.connect(url))
        local direct_conn = assert(kronos.connect(direct))
        finally(function() a:close(); direct_conn:close() end)
        assert(a:exec("LISTEN pgb_channel"))
        assert(direct_conn:exec("NOTIFY pgb_channel, 'lost'"))
        local n, err = a:wait_for_notification(0.3)
        -- the server connection that ran LISTEN went back to the pool: the client never hears it
        assert.is_nil(n)
        assert.equals("timeout", err.code)
    end)
end)
