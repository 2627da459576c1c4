-- The connection (src/conn.c, session.c, exec.c, stream.c, transaction.c): connect, exec, script, rows, transactions, reset.
local kronos = require "kronos"
local H = require "spec.helper"

local LUA54 = _VERSION == "Lua 5.4" and not H.luajit

describe("kronos connection", function()
    local url, dbname, conn

    setup(function()
        url, dbname = H.fresh_db("conn")
        conn = assert(kronos.connect(url))
        assert(conn:exec("CREATE TABLE item (id int PRIMARY KEY, name text NOT NULL)"))
    end)

    teardown(function()
        conn:close()
        H.drop_db(dbname)
    end)

    before_each(function()
        assert(conn:exec("TRUNCATE item"))
    end)

    local function count()
        return conn:exec("SELECT count(*) AS n FROM item")[1].n
    end

    describe("connect", function()
        it("takes a postgresql:// URL", function()
            local c, err = kronos.connect(url)
            assert.is_nil(err)
            assert.are.equal(dbname, c:exec("SELECT current_database() AS d")[1].d)
            c:close()
        end)

        it("takes a libpq keyword/value string", function()
            local admin = assert(kronos.connect(url))
            local host = admin:exec("SELECT inet_server_addr()::text AS h, inet_server_port() AS p")[1]
            admin:close()
            local c = assert(kronos.connect(("host=127.0.0.1 port=%d dbname=%s user=postgres"):format(host.p, dbname)))
            assert.are.equal(dbname, c:exec("SELECT current_database() AS d")[1].d)
            c:close()
        end)

        it("takes a table with url, whose keywords override the url", function()
            local c = assert(kronos.connect({ url = H.base_url, dbname = dbname, application_name = "spec-app" }))
            local r = c:exec("SELECT current_database() AS d, current_setting('application_name') AS a")[1]
            assert.are.same({ d = dbname, a = "spec-app" }, r)
            c:close()
        end)

        it("falls back to DATABASE_URL with no argument, and refines it with a table", function()
            local c = assert(kronos.connect())
            assert.are.equal(H.base_url:match("/([^/?]+)$"), c:exec("SELECT current_database() AS d")[1].d)
            c:close()
            c = assert(kronos.connect({ dbname = dbname }))
            assert.are.equal(dbname, c:exec("SELECT current_database() AS d")[1].d)
            c:close()
        end)

        it("keeps table keywords over DATABASE_URL when PGCONNECT_TIMEOUT is set", function()
            local code, out = H.run(("PGCONNECT_TIMEOUT=5 %s -e %q"):format(H.lua,
                ("local c = assert(require('kronos').connect({dbname = %q})) " ..
                 "io.write(c:exec('SELECT current_database() AS d')[1].d)"):format(dbname)))
            assert.are.equal(0, code, out)
            assert.are.equal(dbname, out)
        end)

        it("sets application_name kronos, UTC and ISO dates", function()
            local r = conn:exec([[SELECT current_setting('application_name') AS a,
                current_setting('TimeZone') AS tz, current_setting('DateStyle') AS ds]])[1]
            assert.are.equal("kronos", r.a)
            assert.is_truthy(r.tz == "UTC" or r.tz == "Etc/UTC", r.tz)
            assert.are.equal("ISO, MDY", r.ds)
            assert.are.equal("+00", conn:exec("SELECT right(now()::text, 3) AS z")[1].z)
        end)

        it("returns nil and a connection error for an unreachable server", function()
            local c, err = kronos.connect("postgresql://postgres@127.0.0.1:1/x?connect_timeout=2")
            assert.is_nil(c)
            assert.is_true(kronos.is_error(err))
            assert.are.equal("connection", err.code)
            assert.matches("127.0.0.1", err.message)
            assert.is_nil(tostring(err):find("\n"))
        end)

        it("raises on a wrong argument type", function()
            assert.has_error(function() kronos.connect(true) end,
                "bad argument #1 to 'connect' (conninfo string or table expected, got boolean) [bad_argument]")
            assert.has_error(function() kronos.connect({ url = 5432 }) end)
            assert.has_error(function() kronos.connect({ port = {} }) end)
        end)

        it("checks its own table keys through the option reader, before connecting", function()
            local function bad(opts, why)
                local err = H.bad_argument(function() kronos.connect(opts) end)
                assert.are.equal("connect", err.func)
                assert.are.equal("bad argument #1 to 'connect' (" .. why .. ")", err.message)
            end
            -- a port nothing listens on: a check that let the table through would try to connect
            local nowhere = "postgresql://postgres@127.0.0.1:1/x?connect_timeout=1"
            bad({ url = 5432 }, "opts.url: string expected, got number")
            bad({ url = nowhere, decode = "arrays" }, "opts.decode: table expected, got string")
            bad({ url = nowhere, decode = { arrays = 1 } }, "opts.decode.arrays: boolean expected, got number")
            bad({ url = nowhere, decode = { array = true } },
                'opts.decode: unknown key "array" (did you mean "arrays"?)')
            bad({ url = nowhere, decode = { json = "cjson" } }, "opts.decode.json: function expected, got string")
            bad({ url = nowhere, encode = true }, "opts.encode: table expected, got boolean")
            bad({ url = nowhere, encode = { jsn = tostring } }, 'opts.encode: unknown key "jsn" (did you mean "json"?)')
            bad({ url = nowhere, encode = { json = {} } }, "opts.encode.json: function expected, got table")
            -- every other key is a libpq keyword, passed through (libpq judges it)
            local c, err = kronos.connect({ url = nowhere, no_such_keyword = "x" })
            assert.is_nil(c)
            assert.are.equal("connection", err.code)
            assert.matches("no_such_keyword", err.message, 1, true)
            c = assert(kronos.connect({ url = url, application_name = "spec-own-keys", decode = { arrays = true },
                encode = {} }))
            finally(function() c:close() end)
            local r = c:exec("SELECT current_setting('application_name') AS a, '{1,2}'::int[] AS v")[1]
            assert.are.same({ a = "spec-own-keys", v = { 1, 2 } }, r)
        end)
    end)

    describe("passwords", function()
        local port = H.base_url:match(":(%d+)/")
        local secret = "Zq7-hunter2-s3cret"

        setup(function()
            local admin = assert(kronos.connect(H.base_url))
            assert(admin:exec([[DO $$ BEGIN CREATE ROLE kronos_pw LOGIN;
                EXCEPTION WHEN duplicate_object THEN NULL; END $$]]))
            assert(admin:exec("ALTER ROLE kronos_pw PASSWORD 'right-password'"))
            admin:close()
        end)

        local function no_secret(c, err)
            assert.is_nil(c)
            assert.is_true(kronos.is_error(err))
            assert.are.equal("connection", err.code)
            assert.is_nil(tostring(err):find(secret, 1, true))
            assert.is_nil(err.message:find(secret, 1, true))
            return err
        end

        it("never appear in a failed login's error, in any connect form", function()
            local e = no_secret(kronos.connect(("postgresql://kronos_pw:%s@127.0.0.1:%s/postgres"):format(secret, port)))
            assert.matches("password authentication failed", e.message)
            no_secret(kronos.connect(("host=127.0.0.1 port=%s user=kronos_pw password=%s dbname=postgres"):format(port, secret)))
            no_secret(kronos.connect({ host = "127.0.0.1", port = port, user = "kronos_pw", password = secret }))
            no_secret(kronos.connect({ url = ("postgresql://kronos_pw:%s@127.0.0.1:%s/postgres"):format(secret, port) }))
        end)

        it("never appear when the connection string does not parse", function()
            no_secret(kronos.connect(("postgresql://kronos_pw:%s%%zz@127.0.0.1:%s/postgres"):format(secret, port)))
            no_secret(kronos.connect(("password=%s trailing-word"):format(secret)))
            no_secret(kronos.connect(("host=127.0.0.1 password='%s"):format(secret)))
        end)

        it("connect with the right password", function()
            local c = assert(kronos.connect(("postgresql://kronos_pw:right-password@127.0.0.1:%s/postgres"):format(port)))
            assert.are.equal("kronos_pw", c:exec("SELECT current_user AS u")[1].u)
            assert.is_nil(tostring(c):find("right-password", 1, true))
            c:close()
        end)
    end)

    describe("exec", function()
        it("returns rows keyed by column, with columns and affected", function()
            local r = assert(conn:exec("INSERT INTO item VALUES ($1, $2), ($3, $4)", 1, "one", 2, "two"))
            assert.are.equal(2, r.affected)
            assert.are.equal(0, #r)
            r = assert(conn:exec("SELECT id, name FROM item ORDER BY id"))
            assert.are.same({ { id = 1, name = "one" }, { id = 2, name = "two" } }, { r[1], r[2] })
            assert.are.equal(2, #r)
            assert.are.same({ "id", "name" }, r.columns)
            r = assert(conn:exec("UPDATE item SET name = upper(name) WHERE id >= $1 RETURNING name", 2))
            assert.are.equal(1, r.affected)
            assert.are.equal("TWO", r[1].name)
            assert.are.equal(2, conn:exec("DELETE FROM item").affected)
        end)

        it("sends values as parameters, never as SQL", function()
            local evil = "x'); DROP TABLE item; --"
            assert(conn:exec("INSERT INTO item VALUES ($1, $2)", 1, evil))
            assert.are.equal(evil, conn:exec("SELECT name FROM item WHERE id = $1", 1)[1].name)
        end)

        it("returns nil, err for several statements, a wrong parameter count or an empty query", function()
            local r, err = conn:exec("SELECT 1; SELECT 2")
            assert.is_nil(r)
            assert.are.equal("syntax_error", err.code)
            r, err = conn:exec("SELECT $1::int + $2::int", 1)
            assert.is_nil(r)
            assert.are.equal("08P01", err.sqlstate)
            r = assert(conn:exec(""))
            assert.are.equal(0, #r)
        end)

        it("raises on misuse naming the argument", function()
            assert.has_error(function() conn:exec({}) end,
                "bad argument #1 to 'exec' (string expected, got table) [bad_argument]")
            assert.has_error(function() conn:exec("SELECT $1", print) end)
            assert.has_error(function() conn:exec("SELECT 1\0 --") end,
                "bad argument #1 to 'exec' (SQL contains a NUL byte) [bad_argument]")
            assert.has_error(function() conn.exec(io.stdout, "SELECT 1") end)
        end)

        it("refuses COPY with stdin/stdout and stays usable", function()
            local r, err = conn:exec("COPY item FROM STDIN")
            assert.is_nil(r)
            assert.are.equal("feature_not_supported", err.code)
            r, err = conn:exec("COPY (SELECT 1) TO STDOUT")
            assert.is_nil(r)
            assert.are.equal("feature_not_supported", err.code)
            assert.are.equal(7, conn:exec("SELECT 7 AS n")[1].n)
        end)
    end)

    describe("script", function()
        it("runs several statements and returns the rows of the last", function()
            local r = assert(conn:script([[
                INSERT INTO item VALUES (1, 'a');
                INSERT INTO item VALUES (2, 'b');
                SELECT count(*) AS n FROM item;
            ]]))
            assert.are.equal(2, r[1].n)
        end)

        it("stops at the first error, which is a single implicit transaction", function()
            local r, err = conn:script([[INSERT INTO item VALUES (1, 'a');
                INSERT INTO item VALUES (1, 'b'); INSERT INTO item VALUES (3, 'c')]])
            assert.is_nil(r)
            assert.are.equal("unique_violation", err.code)
            assert.are.equal(0, count())
        end)
    end)

    describe("rows", function()
        it("streams every row of a large result in constant memory", function()
            collectgarbage("collect")
            local base = collectgarbage("count")
            local n, sum, peak = 0, 0, 0
            for row in conn:rows("SELECT g, repeat('x', 100) AS pad FROM generate_series(1, $1::int) g", 200000) do
                n = n + 1
                sum = sum + row.g
                if n % 20000 == 0 then peak = math.max(peak, collectgarbage("count") - base) end
            end
            assert.are.equal(200000, n)
            assert.are.equal(200000 * 200001 / 2, sum)
            -- exec() of the same result holds ~200000 tables (tens of MB); the stream a few rows
            assert.is_true(peak < 8 * 1024, ("Lua heap grew by %.0f KB while streaming"):format(peak))
        end)

        it("gives each row keyed by column, with NULL as nil", function()
            local got = {}
            local sql = "SELECT g AS id, CASE WHEN g = 2 THEN NULL ELSE 'n' || g END AS name FROM generate_series(1, 3) g"
            for row in conn:rows(sql) do
                got[#got + 1] = row
            end
            assert.are.same({ { id = 1, name = "n1" }, { id = 2 }, { id = 3, name = "n3" } }, got)
        end)

        it("leaves the connection usable after breaking out early", function()
            local n = 0
            for _ in conn:rows("SELECT g FROM generate_series(1, 1000000) g") do
                n = n + 1
                if n == 5 then break end
            end
            assert.are.equal(5, n)
            assert.are.equal(42, conn:exec("SELECT 42 AS v")[1].v)
            assert.is_false(conn:in_transaction())
        end)

        it("drains an abandoned stream inside a transaction, which stays alive", function()
            conn:transaction(function(c)
                c:exec("INSERT INTO item VALUES (1, 'kept')")
                for _ in c:rows("SELECT g FROM generate_series(1, 1000) g") do break end -- luacheck: ignore 512
                c:exec("INSERT INTO item VALUES (2, 'kept')")
            end)
            assert.are.equal(2, count())
        end)

        it("keeps an iterator going when the connection runs another statement", function()
            local it = conn:rows("SELECT g FROM generate_series(1, 10) g")
            assert.are.equal(1, it().g)
            assert.are.equal(1, conn:exec("SELECT 1 AS v")[1].v)
            for g = 2, 10 do assert.are.equal(g, it().g) end
            assert.is_nil(it())
            assert.is_nil(it())
        end)

        it("runs the backfill loop: statements inside a stream's loop", function()
            assert(conn:exec("INSERT INTO item SELECT g, 'n' || g FROM generate_series(1, 50) g"))
            local seen = 0
            for row in conn:rows("SELECT id, name FROM item ORDER BY id") do
                seen = seen + 1
                assert.are.equal(seen, row.id)
                assert(conn:exec("UPDATE item SET name = upper(name) WHERE id = $1", row.id))
                local st = assert(conn:prepare("SELECT name FROM item WHERE id = $1"))
                assert.are.equal("N" .. row.id, st:exec(row.id)[1].name)
                st:close()
            end
            assert.are.equal(50, seen)
            assert.are.equal(50, conn:exec("SELECT count(*) AS n FROM item WHERE name = upper(name)")[1].n)
        end)

        it("keeps the stream's error for after its buffered rows", function()
            local got, it = {}, conn:rows("SELECT 10 / (3 - g) AS v FROM generate_series(1, 5) g")
            got[1] = it().v
            assert(conn:exec("SELECT 1"))
            local ok, err = pcall(function()
                for row in it do got[#got + 1] = row.v end
            end)
            assert.is_false(ok)
            assert.are.equal("division_by_zero", err.code)
            assert.are.same({ 5, 10 }, got)
            assert.are.equal(1, conn:exec("SELECT 1 AS v")[1].v)
        end)

        it("keeps going inside a transaction and across conn:transaction", function()
            local n = 0
            conn:transaction(function(c)
                for row in c:rows("SELECT g FROM generate_series(1, 20) g") do
                    n = n + 1
                    assert(c:exec("INSERT INTO item VALUES ($1, 'x')", row.g))
                end
            end)
            assert.are.equal(20, n)
            assert.are.equal(20, count())
        end)

        it("ends the stream through its closing value (Lua 5.4 for loops call it)", function()
            local it, _, _, closer = conn:rows("SELECT g FROM generate_series(1, 100000) g")
            assert.are.equal(1, it().g)
            local mt = getmetatable(closer)
            assert.is_function(mt.__close)
            mt.__close(closer)
            local ok, err = pcall(it)
            assert.is_false(ok)
            assert.matches("iterator has ended", tostring(err))
            assert.are.equal(3, conn:exec("SELECT 3 AS v")[1].v)
        end)

        if LUA54 then
            it("closes the stream when a Lua 5.4 for loop is left by break", function()
                local f = assert(load([[
                    local conn = ...
                    local it, s, c0, closer = conn:rows("SELECT g FROM generate_series(1, 100000) g")
                    for _ in it, s, c0, closer do break end
                    return pcall(it)
                ]]))
                local ok, err = f(conn)
                assert.is_false(ok)
                assert.matches("iterator has ended", tostring(err))
            end)
        end

        it("raises the error object of a failing statement", function()
            local ok, err = pcall(function()
                for _ in conn:rows("SELECT 1 / (g - 3) FROM generate_series(1, 5) g") do end
            end)
            assert.is_false(ok)
            assert.is_true(kronos.is_error(err))
            assert.are.equal("division_by_zero", err.code)
            ok, err = pcall(function() for _ in conn:rows("SELECT * FROM missing_table") do end end)
            assert.is_false(ok)
            assert.are.equal("undefined_table", err.code)
            assert.are.equal(1, conn:exec("SELECT 1 AS v")[1].v)
        end)

        it("runs statements without rows", function()
            local n = 0
            for _ in conn:rows("INSERT INTO item VALUES ($1, $2)", 9, "nine") do n = n + 1 end
            assert.are.equal(0, n)
            assert.are.equal(1, count())
        end)
    end)

    describe("transaction", function()
        it("commits and returns fn's results, passing the connection and arguments", function()
            local a, b = conn:transaction(function(c, x, y)
                assert.are.equal(conn, c)
                assert.is_true(c:in_transaction())
                c:exec("INSERT INTO item VALUES ($1, $2)", x, y)
                return "done", x
            end, 1, "one")
            assert.are.equal("done", a)
            assert.are.equal(1, b)
            assert.is_false(conn:in_transaction())
            assert.are.equal(1, count())
        end)

        it("rolls back and re-raises the very same error value", function()
            local thrown = { reason = "stop" }
            local ok, err = pcall(conn.transaction, conn, function(c)
                c:exec("INSERT INTO item VALUES (1, 'gone')")
                error(thrown)
            end)
            assert.is_false(ok)
            assert.are.equal(thrown, err)
            assert.are.equal(0, count())
            ok, err = pcall(conn.transaction, conn, function(c)
                c:exec("INSERT INTO item VALUES (1, 'gone')")
                error("plain message", 0)
            end)
            assert.is_false(ok)
            assert.are.equal("plain message", err)
            assert.are.equal(0, count())
            assert.is_false(conn:in_transaction())
        end)

        it("nests as savepoints: an inner failure rolls back only the inner work", function()
            conn:transaction(function(c)
                c:exec("INSERT INTO item VALUES (1, 'outer')")
                local ok = pcall(c.transaction, c, function(c2)
                    c2:exec("INSERT INTO item VALUES (2, 'inner')")
                    c2:transaction(function(c3) c3:exec("INSERT INTO item VALUES (3, 'innermost')") end)
                    assert.are.equal(3, c2:exec("SELECT count(*) AS n FROM item")[1].n)
                    error("inner fails")
                end)
                assert.is_false(ok)
                c:transaction(function(c2) c2:exec("INSERT INTO item VALUES (4, 'second inner')") end)
            end)
            local ids = {}
            for _, r in ipairs(conn:exec("SELECT id FROM item ORDER BY id")) do ids[#ids + 1] = r.id end
            assert.are.same({ 1, 4 }, ids)
        end)

        it("an outer failure rolls back committed savepoints too", function()
            pcall(conn.transaction, conn, function(c)
                c:transaction(function(c2) c2:exec("INSERT INTO item VALUES (1, 'x')") end)
                error("outer fails")
            end)
            assert.are.equal(0, count())
        end)

        it("returns nil, err when fn swallowed an SQL error, and keeps nothing", function()
            local r, err = conn:transaction(function(c)
                c:exec("INSERT INTO item VALUES (1, 'a')")
                local _, e = c:exec("INSERT INTO item VALUES (1, 'dup')")
                assert.are.equal("unique_violation", e.code)
                return "fn finished"
            end)
            assert.is_nil(r)
            assert.are.equal("transaction_rollback", err.code)
            assert.are.equal(0, count())
            assert.is_false(conn:in_transaction())
            -- the same inside a savepoint: the outer transaction survives
            conn:transaction(function(c)
                c:exec("INSERT INTO item VALUES (5, 'outer')")
                local r2, err2 = c:transaction(function(c2)
                    c2:exec("INSERT INTO item VALUES (5, 'dup')")
                end)
                assert.is_nil(r2)
                assert.are.equal("transaction_rollback", err2.code)
            end)
            assert.are.equal(1, count())
        end)

        it("uses a savepoint inside a transaction begun by hand and leaves it open", function()
            assert(conn:exec("BEGIN"))
            conn:transaction(function(c) c:exec("INSERT INTO item VALUES (1, 'a')") end)
            assert.is_true(conn:in_transaction())
            assert(conn:exec("ROLLBACK"))
            assert.are.equal(0, count())
        end)

        it("returns nil, err when COMMIT fails (deferred constraint)", function()
            assert(conn:exec([[CREATE TABLE IF NOT EXISTS deferred_u (v int,
                CONSTRAINT deferred_u_v UNIQUE (v) DEFERRABLE INITIALLY DEFERRED)]]))
            local r, err = conn:transaction(function(c)
                c:exec("INSERT INTO deferred_u VALUES (1), (1)")
                return true
            end)
            assert.is_nil(r)
            assert.are.equal("unique_violation", err.code)
            assert.are.equal("deferred_u_v", err.constraint)
            assert.are.equal(0, conn:exec("SELECT count(*) AS n FROM deferred_u")[1].n)
        end)

        it("raises when fn is not a function", function()
            assert.has_error(function() conn:transaction("nope") end)
        end)
    end)

    describe("close", function()
        it("makes any later use raise clearly; close twice is fine", function()
            local c = assert(kronos.connect(url))
            assert.is_true(c:close())
            assert.is_true(c:close())
            assert.are.equal("closed", c:status())
            assert.are.equal("kronos.connection (closed)", tostring(c))
            assert.has_error(function() c:exec("SELECT 1") end,
                "calling 'exec' on bad self (connection is closed) [bad_argument]")
            assert.has_error(function() c:rows("SELECT 1") end)
            assert.has_error(function() c:transaction(function() end) end)
            assert.has_error(function() c:escape_literal("x") end)
        end)

        it("ends a running rows() loop with a clear error", function()
            local c = assert(kronos.connect(url))
            local ok, err = pcall(function()
                for _ in c:rows("SELECT g FROM generate_series(1, 1000) g") do c:close() end
            end)
            assert.is_false(ok)
            assert.matches("closed during the loop", tostring(err))
        end)

        it("frees the server session when collected", function()
            local c = assert(kronos.connect(url))
            local pid = c:backend_pid()
            c = nil -- luacheck: ignore 311
            collectgarbage("collect")
            collectgarbage("collect")
            local gone = false
            for _ = 1, 200 do
                if conn:exec("SELECT count(*) AS n FROM pg_stat_activity WHERE pid = $1", pid)[1].n == 0 then
                    gone = true
                    break
                end
                conn:exec("SELECT pg_sleep(0.01)")
            end
            assert.is_true(gone)
        end)

        if LUA54 then
            it("closes a <close> variable at the end of its scope", function()
                local f = assert(load([[
                    local kronos, url = ...
                    local saved
                    do
                        local c <close> = assert(kronos.connect(url))
                        saved = c
                        assert(c:exec("SELECT 1"))
                    end
                    return saved
                ]]))
                local c = f(kronos, url)
                assert.are.equal("closed", c:status())
                assert.has_error(function() c:exec("SELECT 1") end)
            end)
        end
    end)

    describe("escape", function()
        it("quotes identifiers and literals", function()
            assert.are.equal('"we""ird"', conn:escape_identifier('we"ird'))
            assert.are.equal("'it''s'", conn:escape_literal("it's"))
            assert.are.equal(" E'back\\\\slash'", conn:escape_literal("back\\slash"))
            local ident = conn:escape_identifier("Mixed Case")
            assert(conn:exec("CREATE TEMP TABLE " .. ident .. " (v text)"))
            assert(conn:exec("INSERT INTO " .. ident .. " VALUES (" .. conn:escape_literal("x'y") .. ")"))
            assert.are.equal("x'y", conn:exec("SELECT v FROM " .. ident)[1].v)
        end)

        it("raises on a NUL byte instead of cutting the string", function()
            assert.has_error(function() conn:escape_literal("a\0b") end)
            assert.has_error(function() conn:escape_identifier("a\0b") end)
        end)
    end)

    describe("reset", function()
        it("reconnects after the server ended the session", function()
            local c = assert(kronos.connect(url))
            local pid = c:backend_pid()
            assert.is_true(conn:exec("SELECT pg_terminate_backend($1::int) AS t", pid)[1].t)
            local r, err
            for _ = 1, 100 do -- the backend exits asynchronously
                r, err = c:exec("SELECT 1 AS v")
                if not r then break end
                conn:exec("SELECT pg_sleep(0.01)")
            end
            assert.is_nil(r)
            assert.are.equal("connection", err.code)
            assert.are.equal("bad", c:status())
            assert.is_true(c:reset())
            assert.are.equal("ok", c:status())
            assert.are_not.equal(pid, c:backend_pid())
            assert.are.equal(1, c:exec("SELECT 1 AS v")[1].v)
            assert.are.equal("+00", c:exec("SELECT right(now()::text, 3) AS z")[1].z)
            c:close()
        end)
    end)

    it("reports status, pid, server version and tostring", function()
        assert.are.equal("ok", conn:status())
        assert.is_true(conn:backend_pid() > 0)
        assert.is_true(conn:server_version() >= 100000)
        assert.matches("^kronos%.connection %(host=.* dbname=" .. dbname:gsub("%p", "%%%0") .. " user=postgres%)$",
            tostring(conn))
    end)
end)
