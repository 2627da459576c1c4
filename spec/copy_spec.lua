-- COPY through the connection: copy_from and copy_to (src/copy.c, src/copytext.c).
local kronos = require "kronos"
local H = require "spec.helper"

describe("COPY", function()
    local url, dbname, conn

    setup(function()
        url, dbname = H.fresh_db("copy")
        conn = assert(kronos.connect(url))
        assert(conn:exec([[CREATE TABLE t (id int8 PRIMARY KEY, name text, ok bool, f float8, b bytea,
            n numeric)]]))
    end)

    teardown(function()
        conn:close()
        H.drop_db(dbname)
    end)

    before_each(function() assert(conn:exec("TRUNCATE t")) end)

    local nasty = "tab\there\nnewline\\backslash\rcr \\N \\. é ☃ '\"; DROP TABLE t; --"

    it("copy_from an array of rows: exact values, NULLs and a trailing nil", function()
        local rows = {
            { 1, "plain", true, 0.1, kronos.bytea("\0\1\255"), "1.50" },
            { 2, nasty, false, -2 ^ 53, kronos.null, "-0" },
            { 3, "", nil, 1e300 },   -- trailing values nil: NULLs, not a shorter row
            { 4, "\\N" },
        }
        assert.are.equal(4, assert(conn:copy_from("COPY t FROM STDIN", rows)))
        local got = conn:exec("SELECT id, name, ok, f, b, n::text AS n FROM t ORDER BY id")
        assert.are.same({ id = 1, name = "plain", ok = true, f = 0.1, b = "\0\1\255", n = "1.50" }, got[1])
        assert.are.same({ id = 2, name = nasty, ok = false, f = -2 ^ 53, n = "0" }, got[2])
        assert.are.same({ id = 3, name = "", f = 1e300 }, got[3])
        assert.are.same({ id = 4, name = "\\N" }, got[4])
    end)

    it("copy_from a function, in constant memory", function()
        local i, N = 0, 100000
        collectgarbage()
        collectgarbage()
        local before, live = collectgarbage("count"), nil
        local n = assert(conn:copy_from("COPY t (id, name) FROM STDIN", function()
            i = i + 1
            if i == 50000 then -- half way: what is still alive after a full collection
                collectgarbage()
                collectgarbage()
                live = collectgarbage("count") - before
            end
            if i <= N then return { i, ("row %d %s"):format(i, ("x"):rep(100)) } end
        end))
        assert.are.equal(N, n)
        assert.are.equal(N, conn:exec("SELECT count(*) AS c FROM t")[1].c)
        -- 50,000 rows of ~110 bytes sent so far are 5.5 MB: none of it is kept
        assert.is_true(live < 512, ("live heap grew by %.0f KB"):format(live))
    end)

    it("returns the server's error with the line it names; the connection stays usable", function()
        local n, err = conn:copy_from("COPY t (id, name) FROM STDIN", { { 1, "a" }, { 2, "b" }, { 2, "dup" } })
        assert.is_nil(n)
        assert.are.equal("unique_violation", err.code)
        n, err = conn:copy_from("COPY t (id, ok) FROM STDIN", { { 1, true }, { 2, "maybe" } })
        assert.is_nil(n)
        assert.are.equal("invalid_text_representation", err.code)
        assert.are.equal(2, err.line)
        -- a trigger's context lines come before the COPY's own: the line is still the COPY's
        assert(conn:exec([[CREATE FUNCTION spec_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN IF NEW.id = 3 THEN RAISE EXCEPTION 'refused, line 9'; END IF; RETURN NEW; END $$]]))
        assert(conn:exec("CREATE TRIGGER spec_refuse BEFORE INSERT ON t FOR EACH ROW EXECUTE PROCEDURE spec_refuse()"))
        n, err = conn:copy_from("COPY t (id) FROM STDIN", { { 1 }, { 2 }, { 3 } })
        assert(conn:exec("DROP TRIGGER spec_refuse ON t"))
        assert(conn:exec("DROP FUNCTION spec_refuse()"))
        assert.is_nil(n)
        assert.are.equal("raise_exception", err.code)
        assert.are.equal(3, err.line)
        n, err = conn:copy_from("COPY missing FROM STDIN", {})
        assert.is_nil(n)
        assert.are.equal("undefined_table", err.code)
        assert.are.equal(0, conn:exec("SELECT count(*) AS c FROM t")[1].c)
        assert.are.equal(1, conn:exec("SELECT 1 AS v")[1].v)
    end)

    it("a source that raises aborts the COPY and raises its error; the connection stays usable", function()
        local i = 0
        local ok, err = pcall(conn.copy_from, conn, "COPY t (id) FROM STDIN", function()
            i = i + 1
            if i == 3 then error("source failed", 0) end
            return { i }
        end)
        assert.is_false(ok)
        assert.are.equal("source failed", err)
        assert.are.equal(0, conn:exec("SELECT count(*) AS c FROM t")[1].c)
        -- a bad value raises too
        ok, err = pcall(conn.copy_from, conn, "COPY t (id) FROM STDIN", { { 1 }, { {} } })
        assert.is_false(ok)
        assert.are.equal("bad_argument", err.code)
        ok, err = pcall(conn.copy_from, conn, "COPY t (id) FROM STDIN", { { 1, 2 } })
        assert.is_false(ok)
        assert.matches("has 2 values, the COPY has 1 columns", tostring(err), 1, true)
        -- the source cannot use the connection meanwhile
        ok, err = pcall(conn.copy_from, conn, "COPY t (id) FROM STDIN", function()
            conn:exec("SELECT 1")
        end)
        assert.is_false(ok)
        assert.are.equal("connection_busy", err.code)
        assert.are.equal(0, conn:exec("SELECT count(*) AS c FROM t")[1].c)
        -- inside a transaction the failed COPY aborts it, as any failed statement does
        local tok = pcall(conn.transaction, conn, function(c)
            assert(c:exec("INSERT INTO t (id) VALUES (100)"))
            c:copy_from("COPY t (id) FROM STDIN", function() error("x") end)
        end)
        assert.is_false(tok)
        assert.are.equal(0, conn:exec("SELECT count(*) AS c FROM t")[1].c)
    end)

    it("refuses a statement that is not COPY FROM STDIN", function()
        local ok, err = pcall(conn.copy_from, conn, "COPY t TO STDOUT", {})
        assert.is_false(ok)
        assert.are.equal("bad_argument", err.code)
        assert.are.equal(1, conn:exec("SELECT 1 AS v")[1].v)
    end)

    it("copy_to iterates rows as arrays of strings, NULL as nil, escapes undone", function()
        assert(conn:copy_from("COPY t (id, name, b) FROM STDIN",
            { { 1, nasty, kronos.bytea("\0\n") }, { 2, nil }, { 3, "" } }))
        local got = {}
        for row in conn:copy_to("COPY (SELECT id, name, b FROM t ORDER BY id) TO STDOUT") do
            got[#got + 1] = row
        end
        assert.are.same({ { "1", nasty, "\\x000a" }, { "2" }, { "3", "" } }, got)
        -- escapes the server may write: \b \f \v, octal
        got = {}
        for row in conn:copy_to("COPY (SELECT E'\\b\\f' || chr(11) || E'\\x01' AS v) TO STDOUT") do got[#got + 1] = row end
        assert.are.same({ { "\b\f\v\1" } }, got)
    end)

    it("copy_to streams in constant memory and leaves the connection usable after a break", function()
        collectgarbage()
        collectgarbage()
        local before, live, n = collectgarbage("count"), nil, 0
        for row in conn:copy_to("COPY (SELECT g, repeat('x', 100) FROM generate_series(1, 100000) g) TO STDOUT") do
            n = n + 1
            assert.are.equal(tostring(n), row[1])
            if n == 50000 then
                collectgarbage()
                collectgarbage()
                live = collectgarbage("count") - before
            end
        end
        assert.are.equal(100000, n)
        assert.is_true(live < 512, ("live heap grew by %.0f KB"):format(live))
        local it = conn:copy_to("COPY (SELECT g FROM generate_series(1, 100000) g) TO STDOUT")
        assert.are.same({ "1" }, it())
        assert.are.equal(7, conn:exec("SELECT 7 AS v")[1].v) -- ends the copy
        local ok, err = pcall(it)
        assert.is_false(ok)
        assert.are.equal("iterator_ended", err.code)
        -- inside a transaction the abandoned COPY is drained, not cancelled: the transaction lives
        conn:transaction(function(c)
            assert(c:exec("INSERT INTO t (id) VALUES (1)"))
            local it2 = c:copy_to("COPY (SELECT g FROM generate_series(1, 1000) g) TO STDOUT")
            it2()
            assert(c:exec("INSERT INTO t (id) VALUES (2)"))
        end)
        assert.are.equal(2, conn:exec("SELECT count(*) AS c FROM t")[1].c)
    end)

    it("copy_to raises the server's error", function()
        local ok, err = pcall(function()
            for _ in conn:copy_to("COPY (SELECT 1 / (g - 2) FROM generate_series(1, 5) g) TO STDOUT") do end
        end)
        assert.is_false(ok)
        assert.are.equal("division_by_zero", err.code)
        ok, err = pcall(conn.copy_to, conn, "COPY nothing TO STDOUT")
        assert.is_false(ok)
        assert.are.equal("undefined_table", err.code)
        assert.are.equal(1, conn:exec("SELECT 1 AS v")[1].v)
    end)

    it("round-trips random bytes through copy_from and copy_to", function()
        math.randomseed(14)
        local rows = {}
        for i = 1, 300 do
            local t = {}
            for k = 1, math.random(0, 40) do t[k] = string.char(math.random(1, 255)) end
            rows[i] = { i, table.concat(t) }
        end
        assert(conn:exec("CREATE TEMP TABLE raw (id int, v bytea)"))
        -- text columns must be valid UTF-8: bytes go through bytea
        local brows = {}
        for i, r in ipairs(rows) do brows[i] = { r[1], kronos.bytea(r[2]) } end
        assert.are.equal(300, conn:copy_from("COPY raw FROM STDIN", brows))
        local got = conn:exec("SELECT id, v FROM raw ORDER BY id")
        for i = 1, 300 do assert.are.equal(rows[i][2], got[i].v) end
    end)
end)
