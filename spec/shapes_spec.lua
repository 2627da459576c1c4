-- The compact shapes of a result (conn:exec_arrays, conn:exec_columns in src/result.c) and the
-- float8 fast paths (src/convert.c), against the real server.
local kronos = require "kronos"
local H = require "spec.helper"

describe("result shapes", function()
    local dbname, conn

    setup(function()
        local url
        url, dbname = H.fresh_db("shapes")
        conn = assert(kronos.connect(url))
    end)

    teardown(function()
        conn:close()
        H.drop_db(dbname)
    end)

    -- Every type kind once, NULLs in the middle and at the end of a row.
    local SQL = [[SELECT g AS i, 'row ' || g AS t, CASE WHEN g % 2 = 0 THEN NULL ELSE g * 1.5::float8 END AS f,
        g % 3 = 0 AS b, timestamptz '2026-01-01 00:00:00+00' + g * interval '1 second' AS ts,
        decode(lpad(to_hex(g), 2, '0'), 'hex') AS raw, (g * 7)::numeric(10, 2) AS n,
        CASE WHEN g > $1 THEN NULL ELSE g END AS last
        FROM generate_series(1, $2) g ORDER BY g]]

    it("exec_arrays gives each row as an array of the same values exec gives by name", function()
        local named = assert(conn:exec(SQL, 2, 5))
        local rows = assert(conn:exec_arrays(SQL, 2, 5))
        assert.are.same(named.columns, rows.columns)
        assert.are.same({ "i", "t", "f", "b", "ts", "raw", "n", "last" }, rows.columns)
        assert.are.equal(5, #rows)
        assert.are.equal(5, rows.affected)
        for i, row in ipairs(named) do
            for j, name in ipairs(rows.columns) do
                assert.are.equal(row[name], rows[i][j], name .. " of row " .. i)
            end
        end
        assert.are.same({ 1, "row 1", 1.5, false, "2026-01-01T00:00:01Z", "\1", "7.00", 1 }, rows[1])
        -- a NULL is a hole: row 4 has no f and no last
        assert.is_nil(rows[4][3])
        assert.is_nil(rows[4][8])
        assert.are.equal(math.type and "integer" or "number", math.type and math.type(rows[4][1]) or type(rows[4][1]))
        assert.are.equal(true, rows[3][4])
    end)

    it("exec_columns gives one array per column, n rows, the same values", function()
        local named = assert(conn:exec(SQL, 3, 6))
        local cols = assert(conn:exec_columns(SQL, 3, 6))
        assert.are.equal(6, cols.n)
        assert.are.equal(6, cols.affected)
        assert.are.same(named.columns, cols.columns)
        assert.are.equal(8, #cols)
        for j, name in ipairs(cols.columns) do
            for i = 1, cols.n do
                assert.are.equal(named[i][name], cols[j][i], name .. " of row " .. i)
            end
        end
        assert.are.same({ 1, 2, 3, 4, 5, 6 }, cols[1])
        assert.is_nil(cols[3][2])
        assert.is_nil(cols[8][6])
        assert.are.equal(3, cols[8][3])
    end)

    it("no rows: empty arrays, n = 0; a statement without rows; errors as exec returns them", function()
        local cols = assert(conn:exec_columns("SELECT 1 AS a, 'x' AS b WHERE false"))
        assert.are.equal(0, cols.n)
        assert.are.same({ {}, {} }, { cols[1], cols[2] })
        assert.are.same({ "a", "b" }, cols.columns)
        local rows = assert(conn:exec_arrays("SELECT 1 AS a WHERE false"))
        assert.are.equal(0, #rows)
        assert(conn:exec("CREATE TEMP TABLE shapes_t (a int)"))
        rows = assert(conn:exec_arrays("INSERT INTO shapes_t SELECT generate_series(1, 3)"))
        assert.are.equal(3, rows.affected)
        cols = assert(conn:exec_columns("DELETE FROM shapes_t WHERE a > $1", 1))
        assert.are.equal(2, cols.affected)
        assert.are.equal(0, cols.n)
        for _, f in ipairs { conn.exec_arrays, conn.exec_columns } do
            local r, err = f(conn, "SELECT * FROM no_such_table")
            assert.is_nil(r)
            assert.are.equal("42P01", err.sqlstate)
        end
        assert.has_error(function() conn:exec_columns({}) end)
    end)

    it("build large results whole (the collector paused meanwhile, running after)", function()
        local n = 20000
        local sql = "SELECT g AS i, md5(g::text) AS h FROM generate_series(1, $1) g ORDER BY g"
        local cols = assert(conn:exec_columns(sql, n))
        local rows = assert(conn:exec_arrays(sql, n))
        assert.are.equal(n, cols.n)
        assert.are.equal(n, #rows)
        for _, i in ipairs { 1, 777, n } do
            assert.are.equal(i, cols[1][i])
            assert.are.equal(rows[i][2], cols[2][i])
        end
        if collectgarbage("isrunning") ~= nil then assert.is_true(collectgarbage("isrunning")) end
    end)

    it("float8 values read as the nearest double, as tonumber reads the server's text", function()
        -- the server prints the shortest text that reads back (up to 17 digits): past 2^53 for
        -- most values, where the exact fast path cannot go; every magnitude kronos handles
        -- without strtod and beyond it
        local sql = [[SELECT x, x::text AS t FROM (
            SELECT ((random() - 0.5) * 10 ^ (g % 80 - 40))::float8 AS x FROM generate_series(1, 20000) g
            UNION ALL SELECT v::float8 FROM unnest($1::text[]) v) s]]
        local edges = "{0.1,0.3,9007199254740993,9007199254740992,1e23,8.98846567431158e307," ..
            "2.2250738585072014e-308,4.9406564584124654e-324,-0,1e-27,1e27,123456789012345678," ..
            "0.14285714285714285,1.7976931348623157e308,Infinity,-Infinity,NaN}"
        local rows = assert(conn:exec_arrays(sql, edges))
        assert.is_true(#rows > 20000)
        local bad = 0
        for _, r in ipairs(rows) do
            -- as a float ("-0" would read as the integer 0 on Lua 5.4)
            local want = r[2] == "Infinity" and math.huge or r[2] == "-Infinity" and -math.huge
                or tonumber(r[2]:find("[.eEN]") and r[2] or r[2] .. ".0")
            if r[2] == "NaN" then
                if r[1] == r[1] then bad = bad + 1 end
            elseif r[1] ~= want or (want == 0 and 1 / r[1] ~= 1 / want) then
                bad = bad + 1
            end
        end
        assert.are.equal(0, bad)
    end)
end)
