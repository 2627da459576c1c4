-- Prepared statements (src/statement.c): conn:prepare, st:exec, st:rows, st:close, __gc.
local kronos = require "kronos"
local H = require "spec.helper"

describe("conn:prepare", function()
    local url, dbname, conn

    setup(function()
        url, dbname = H.fresh_db("stmt")
        conn = assert(kronos.connect(url))
        assert(conn:exec("CREATE TABLE t (id int PRIMARY KEY, v text)"))
        assert(conn:exec("INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 10) g"))
    end)

    teardown(function()
        conn:close()
        H.drop_db(dbname)
    end)

    local function prepared_names()
        local names = {}
        for _, r in ipairs(conn:exec("SELECT name FROM pg_prepared_statements WHERE name LIKE 'kronos_st%' ORDER BY name")) do
            names[#names + 1] = r.name
        end
        return names
    end

    it("prepares once and runs with parameters, as a named statement", function()
        local st = assert(conn:prepare("SELECT id, v FROM t WHERE id = $1"))
        assert.are.same({ id = 3, v = "v3" }, st:exec(3)[1])
        assert.are.same({ id = 4, v = "v4" }, st:exec(4)[1])
        assert.are.equal(0, #st:exec(99))
        assert.matches("^kronos.statement %(kronos_st%d+%)$", tostring(st))
        assert.are.equal(1, #prepared_names())
        assert.is_true(st:close())
        assert.is_true(st:close()) -- idempotent
        assert.are.same({}, prepared_names())
        local ok, err = pcall(st.exec, st, 1)
        assert.is_false(ok)
        assert.are.equal("bad_argument", err.code)
    end)

    it("streams with st:rows", function()
        local st = assert(conn:prepare("SELECT id FROM t WHERE id <= $1 ORDER BY id"))
        local got = {}
        for row in st:rows(4) do got[#got + 1] = row.id end
        assert.are.same({ 1, 2, 3, 4 }, got)
        st:close()
    end)

    it("returns the server's error for bad SQL and for a failing execution", function()
        local st, err = conn:prepare("SELEC 1")
        assert.is_nil(st)
        assert.are.equal("syntax_error", err.code)
        st = assert(conn:prepare("SELECT 10 / $1::int AS q"))
        local r
        r, err = st:exec(0)
        assert.is_nil(r)
        assert.are.equal("division_by_zero", err.code)
        assert.are.equal(5, st:exec(2)[1].q)
        st:close()
    end)

    it("is prepared again after DDL changes its result type, and after DEALLOCATE ALL", function()
        assert(conn:exec("CREATE TABLE d (a int)"))
        assert(conn:exec("INSERT INTO d VALUES (1)"))
        local st = assert(conn:prepare("SELECT * FROM d"))
        assert.are.same({ a = 1 }, st:exec()[1])
        assert(conn:exec("ALTER TABLE d ADD COLUMN b text DEFAULT 'x'"))
        assert.are.same({ a = 1, b = "x" }, assert(st:exec())[1])
        assert(conn:exec("ALTER TABLE d ADD COLUMN c int DEFAULT 7"))
        local got = {}
        for row in st:rows() do got[#got + 1] = row end
        assert.are.same({ { a = 1, b = "x", c = 7 } }, got)
        assert(conn:exec("DEALLOCATE ALL"))
        assert.are.same({ a = 1, b = "x", c = 7 }, assert(st:exec())[1])
        -- inside a transaction the error is returned (nothing runs twice), the next call recovers
        assert(conn:exec("ALTER TABLE d DROP COLUMN c"))
        local ok = pcall(conn.transaction, conn, function(c)
            assert(c:exec("INSERT INTO d VALUES (2)"))
            local r, err = st:exec()
            assert.is_nil(r)
            assert.are.equal("feature_not_supported", err.code)
            error(err)
        end)
        assert.is_false(ok)
        assert.are.equal(1, #assert(st:exec()))
        st:close()
        assert(conn:exec("DROP TABLE d"))
    end)

    it("is prepared again on a new session after conn:reset()", function()
        local st = assert(conn:prepare("SELECT v FROM t WHERE id = $1"))
        assert.are.equal("v1", st:exec(1)[1].v)
        assert(conn:reset())
        assert.are.equal("v2", st:exec(2)[1].v)
        st:close()
    end)

    it("is deallocated after garbage collection, at the connection's next statement", function()
        local c = assert(kronos.connect(url))
        finally(function() c:close() end)
        local function count()
            return c:exec("SELECT count(*) AS n FROM pg_prepared_statements WHERE name LIKE 'kronos_st%'")[1].n
        end
        do
            for i = 1, 5 do
                local st = assert(c:prepare("SELECT $1::int + " .. i .. " AS v"))
                assert.are.equal(i + 1, st:exec(1)[1].v)
            end
        end
        -- collected in the middle of a stream: only queued, the stream goes on
        local it = c:rows("SELECT g FROM generate_series(1, 3) g")
        assert.are.equal(1, it().g)
        collectgarbage()
        collectgarbage()
        assert.are.equal(2, it().g)
        assert.are.equal(0, count())
        assert.are.equal(3, it().g)
    end)

    it("checks its arguments", function()
        local ok, err = pcall(conn.prepare, conn, {})
        assert.is_false(ok)
        assert.are.equal("bad_argument", err.code)
        local st = assert(conn:prepare("SELECT $1::text AS v"))
        ok, err = pcall(st.exec, st, {})
        assert.is_false(ok)
        assert.are.equal("bad_argument", err.code)
        assert.are.equal("x", st:exec("x")[1].v)
        st:close()
    end)
end)
