-- Pipelines (src/pipeline.c): statements sent in libpq pipeline mode, results in order.
local kronos = require "kronos"
local H = require "spec.helper"

describe("conn:pipeline", function()
    local url, dbname, conn

    setup(function()
        url, dbname = H.fresh_db("pipeline")
        conn = assert(kronos.connect(url))
        assert(conn:exec("CREATE TABLE t (id int PRIMARY KEY, v text)"))
    end)

    teardown(function()
        conn:close()
        H.drop_db(dbname)
    end)

    before_each(function() assert(conn:exec("TRUNCATE t")) end)

    local function count() return conn:exec("SELECT count(*) AS n FROM t")[1].n end

    it("returns each statement's result in order", function()
        local results = assert(conn:pipeline(function(p)
            assert.are.equal(1, p:exec("INSERT INTO t VALUES ($1, $2)", 1, "one"))
            assert.are.equal(2, p:exec("INSERT INTO t VALUES ($1, $2) RETURNING id", 2, "two"))
            p:exec("SELECT id, v FROM t ORDER BY id")
        end))
        assert.are.equal(3, #results)
        assert.are.equal(0, results.failed)
        assert.are.equal(1, results[1].affected)
        assert.are.same({ id = 2 }, results[2][1])
        assert.are.same({ { id = 1, v = "one" }, { id = 2, v = "two" } }, { results[3][1], results[3][2] })
    end)

    it("by default isolates a failure to its own statement (autocommit each)", function()
        local results = assert(conn:pipeline(function(p)
            p:exec("INSERT INTO t VALUES (1, 'a')")
            p:exec("INSERT INTO t VALUES (1, 'dup')")
            p:exec("INSERT INTO t VALUES (2, 'b')")
        end))
        assert.are.equal(1, results.failed)
        assert.are.equal(1, results[1].affected)
        assert.is_true(kronos.is_error(results[2]))
        assert.are.equal("unique_violation", results[2].code)
        assert.are.equal(2, results[2].index)
        assert.are.equal(1, results[3].affected)
        assert.are.equal(2, count())
    end)

    it("with {transaction = true} is all or nothing", function()
        local r, err = conn:pipeline(function(p)
            p:exec("INSERT INTO t VALUES (1, 'a')")
            p:exec("INSERT INTO t VALUES (1, 'dup')")
            p:exec("INSERT INTO t VALUES (2, 'b')")
        end, { transaction = true })
        assert.is_nil(r)
        assert.are.equal("unique_violation", err.code)
        assert.are.equal(2, err.index)
        assert.are.equal(0, count())
        local results = assert(conn:pipeline(function(p)
            for i = 1, 10 do p:exec("INSERT INTO t VALUES ($1, $2)", i, "v" .. i) end
        end, { transaction = true }))
        assert.are.equal(10, #results)
        assert.are.equal(10, count())
        assert.is_false(conn:in_transaction())
    end)

    it("sends many statements without deadlocking on big results", function()
        local results = assert(conn:pipeline(function(p)
            for i = 1, 2000 do p:exec("INSERT INTO t VALUES ($1, repeat('x', 200))", i) end
            for _ = 1, 20 do p:exec("SELECT g, repeat('y', 1000) AS pad FROM generate_series(1, 2000) g") end
        end))
        assert.are.equal(2020, #results)
        assert.are.equal(0, results.failed)
        assert.are.equal(2000, #results[2020])
        assert.are.equal(2000, count())
    end)

    it("runs inside conn:transaction as part of it", function()
        local ok = pcall(conn.transaction, conn, function(c)
            assert(c:pipeline(function(p) p:exec("INSERT INTO t VALUES (1, 'a')") end))
            error("roll back")
        end)
        assert.is_false(ok)
        assert.are.equal(0, count())
    end)

    it("raises for a bad parameter before sending anything; the connection stays usable", function()
        local ok, err = pcall(conn.pipeline, conn, function(p)
            p:exec("INSERT INTO t VALUES (1, 'a')")
            p:exec("INSERT INTO t VALUES ($1, 'b')", {})
        end)
        assert.is_false(ok)
        assert.are.equal("bad_argument", err.code)
        assert.are.equal(0, count())
        ok, err = pcall(conn.pipeline, conn, function() error("fn failed", 0) end)
        assert.is_false(ok)
        assert.are.equal("fn failed", err)
        assert.are.equal(1, conn:exec("SELECT 1 AS v")[1].v)
        -- the queue is for inside fn only
        local saved
        assert(conn:pipeline(function(p) saved = p end))
        ok, err = pcall(saved.exec, saved, "SELECT 1")
        assert.is_false(ok)
        assert.are.equal("bad_argument", err.code)
        -- an empty pipeline
        local r = assert(conn:pipeline(function() end))
        assert.are.equal(0, #r)
    end)

    it("checks its options through the option reader, before fn runs", function()
        local ran = false
        local function fn(p) ran = true p:exec("INSERT INTO t VALUES (1, 'a')") end
        local function bad(opts, why)
            local err = H.bad_argument(function() conn:pipeline(fn, opts) end)
            assert.are.equal("pipeline", err.func)
            assert.are.equal("bad argument #2 to 'pipeline' (" .. why .. ")", err.message)
        end
        bad({ transaction = "yes" }, "opts.transaction: boolean expected, got string")
        bad({ transaction = 1 }, "opts.transaction: boolean expected, got number")
        bad({ transction = true }, 'opts: unknown key "transction" (did you mean "transaction"?)')
        bad(true, "opts: table expected, got boolean")
        assert.is_false(ran)
        assert.are.equal(0, count())
        assert(conn:pipeline(fn, { transaction = false }))
        assert.are.equal(1, count())
    end)

    it("keeps a stream open across it", function()
        local n = 0
        for row in conn:rows("SELECT g FROM generate_series(1, 5) g") do
            n = n + 1
            assert(conn:pipeline(function(p) p:exec("INSERT INTO t VALUES ($1, 'x')", row.g) end))
        end
        assert.are.equal(5, n)
        assert.are.equal(5, count())
    end)
end)
