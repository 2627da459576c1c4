-- Arrays and JSON (src/decode.c, src/params.c, src/pgarray.c): opt-in decoding, kronos.array and kronos.json.
local kronos = require "kronos"
local cjson = require "cjson"
local H = require "spec.helper"

describe("arrays and JSON", function()
    local url, dbname, conn

    setup(function()
        url, dbname = H.fresh_db("array")
        conn = assert(kronos.connect({ url = url, decode = { arrays = true, json = cjson.decode },
            encode = { json = cjson.encode } }))
    end)

    teardown(function()
        conn:close()
        H.drop_db(dbname)
    end)

    local function one(sql, ...) return assert(conn:exec(sql, ...))[1].v end
    local null = kronos.null

    it("stay text by default", function()
        local c = assert(kronos.connect(url))
        finally(function() c:close() end)
        local r = c:exec([[SELECT '{1,2}'::int[] AS a, '{"k": 1}'::jsonb AS j]])[1]
        assert.are.same({ a = "{1,2}", j = '{"k": 1}' }, r)
    end)

    it("decode one-dimensional arrays of each scalar type with its exact conversion", function()
        assert.are.same({ 1, -32768, null, 32767 }, one("SELECT '{1,-32768,NULL,32767}'::int2[] AS v"))
        assert.are.same({ 2147483647, null }, one("SELECT '{2147483647,NULL}'::int4[] AS v"))
        local big = one("SELECT '{9223372036854775807,-9223372036854775808,5}'::int8[] AS v")
        if H.luajit then
            assert.are.same({ "9223372036854775807", "-9223372036854775808", 5 }, big)
        else
            assert.are.same({ math.maxinteger, math.mininteger, 5 }, big)
        end
        local f = one("SELECT '{0.1,NaN,Infinity,-Infinity,-0}'::float8[] AS v")
        assert.are.equal(0.1, f[1])
        assert.is_true(f[2] ~= f[2])
        assert.are.same({ math.huge, -math.huge }, { f[3], f[4] })
        assert.are.equal(-math.huge, 1 / f[5]) -- -0 keeps its sign
        assert.are.same({ 1.5 }, one("SELECT '{1.5}'::float4[] AS v"))
        assert.are.same({ true, false, null }, one("SELECT '{t,f,NULL}'::bool[] AS v"))
        assert.are.same({ "a", "NULL", "", 'q"uo\\te', "x,y", " sp ", null },
            one([[SELECT ARRAY['a', 'NULL', '', 'q"uo\te', 'x,y', ' sp ', NULL]::text[] AS v]]))
        assert.are.same({ "é☃" }, one("SELECT ARRAY['é☃']::varchar[] AS v"))
        assert.are.same({ "0b5b8e0a-4a4e-4d1e-9a0e-3c1f2b3a4d5e" },
            one("SELECT ARRAY['0B5B8E0A-4A4E-4D1E-9A0E-3C1F2B3A4D5E']::uuid[] AS v"))
        assert.are.same({ "1.50", "NaN", "-0.000001" }, one("SELECT '{1.50,NaN,-0.000001}'::numeric[] AS v"))
        assert.are.same({ "2026-11-23T20:57:01.123456Z", "infinity", null },
            one("SELECT ARRAY['2026-11-23 22:57:01.123456+02', 'infinity', NULL]::timestamptz[] AS v"))
        assert.are.same({}, one("SELECT '{}'::int[] AS v"))
        assert.are.same({ "\0\1" }, one("SELECT ARRAY['\\x0001'::bytea] AS v"))
    end)

    it("decode multi-dimensional arrays and dimension decorations", function()
        assert.are.same({ { 1, 2 }, { 3, null } }, one("SELECT '{{1,2},{3,NULL}}'::int[] AS v"))
        assert.are.same({ { { "a" }, { "b" } } }, one("SELECT '{{{a},{b}}}'::text[] AS v"))
        assert.are.same({ 7, 8 }, one("SELECT '[0:1]={7,8}'::int[] AS v"))
    end)

    it("decode in conn:rows, statements, pipelines and a NULL array stays nil", function()
        local got
        for row in conn:rows("SELECT '{1,2}'::int[] AS v, NULL::int[] AS n") do got = row end
        assert.are.same({ v = { 1, 2 } }, got)
        local st = assert(conn:prepare("SELECT $1::int[] AS v"))
        assert.are.same({ 3, 4 }, st:exec("{3,4}")[1].v)
        st:close()
        local r = assert(conn:pipeline(function(p) p:exec("SELECT '{5}'::int[] AS v") end))
        assert.are.same({ 5 }, r[1][1].v)
    end)

    it("decode json and jsonb through the decoder; json[] too", function()
        local v = one([[SELECT '{"a": [1, 2, null], "b": "x"}'::jsonb AS v]])
        assert.are.same({ a = { 1, 2, cjson.null }, b = "x" }, v)
        assert.are.same({ 1, "two" }, one([[SELECT '[1, "two"]'::json AS v]]))
        assert.are.same({ { k = 1 }, null }, one([[SELECT ARRAY['{"k":1}'::jsonb, NULL] AS v]]))
    end)

    it("set_decode switches decoding per connection", function()
        local c = assert(kronos.connect(url))
        finally(function() c:close() end)
        assert.are.equal(c, c:set_decode({ arrays = true }))
        assert.are.same({ 1 }, c:exec("SELECT '{1}'::int[] AS v")[1].v)
        assert.are.equal('{"k": 1}', c:exec([[SELECT '{"k": 1}'::jsonb AS v]])[1].v)
        c:set_decode({ json = cjson.decode })
        assert.are.equal("{1}", c:exec("SELECT '{1}'::int[] AS v")[1].v)
        assert.are.same({ k = 1 }, c:exec([[SELECT '{"k": 1}'::jsonb AS v]])[1].v)
        local ok, err = pcall(c.set_decode, c, { json = "no" })
        assert.is_false(ok)
        assert.are.equal("bad_argument", err.code)
    end)

    it("set_decode and set_encode check their options through the option reader", function()
        local c = assert(kronos.connect(url))
        finally(function() c:close() end)
        -- not tail calls, so that LuaJIT can name the method too
        local calls = { set_decode = function(o) c:set_decode(o) end, set_encode = function(o) c:set_encode(o) end }
        local function bad(method, opts, why)
            local ok, err = pcall(calls[method], opts)
            assert.is_false(ok)
            assert.is_true(kronos.is_error(err))
            assert.are.equal("bad_argument", err.code)
            assert.are.equal(method, err.func)
            assert.are.equal("bad argument #1 to '" .. method .. "' (" .. why .. ")", err.message)
        end
        assert.are.equal(c, c:set_decode({ arrays = true }))
        bad("set_decode", { json = "no" }, "opts.json: function expected, got string")
        bad("set_decode", { arrays = "yes" }, "opts.arrays: boolean expected, got string")
        bad("set_decode", { arrays = 1 }, "opts.arrays: boolean expected, got number")
        bad("set_decode", { array = false }, 'opts: unknown key "array" (did you mean "arrays"?)')
        bad("set_decode", { arrays = false, [1] = true }, "opts: unexpected number key")
        bad("set_decode", "arrays", "table expected, got string")
        -- a refused table changes nothing: arrays still decode
        assert.are.same({ 1 }, c:exec("SELECT '{1}'::int[] AS v")[1].v)
        bad("set_encode", { json = 1 }, "opts.json: function expected, got number")
        bad("set_encode", { jsn = cjson.encode }, 'opts: unknown key "jsn" (did you mean "json"?)')
        bad("set_encode", nil, "table expected, got nil")
        assert.are.equal(c, c:set_encode({ json = cjson.encode }))
        assert.are.same({ k = 1 }, cjson.decode(c:exec("SELECT $1::text AS v", kronos.json({ k = 1 }))[1].v))
    end)

    it("kronos.array sends an exact literal, every element quoted", function()
        local tricky = { "a", "NULL", "", 'q"uo\\te', "x,y", "{}", " sp ", "é☃" }
        assert.are.same(tricky, one("SELECT $1::text[] AS v", kronos.array(tricky)))
        assert.are.same({ "a", null, "c" }, one("SELECT $1::text[] AS v", kronos.array({ "a", nil, "c", n = 3 })))
        assert.are.same({ 1, null, 3 }, one("SELECT $1::int[] AS v", kronos.array({ 1, kronos.null, 3 })))
        assert.are.same({ { 1, 2 }, { 3, 4 } }, one("SELECT $1::int[] AS v", kronos.array({ { 1, 2 }, { 3, 4 } })))
        assert.are.same({ true, false }, one("SELECT $1::bool[] AS v", kronos.array({ true, false })))
        assert.are.same({ 0.1, -2 ^ 63 }, one("SELECT $1::float8[] AS v", kronos.array({ 0.1, -2 ^ 63 })))
        assert.are.same({}, one("SELECT $1::int[] AS v", kronos.array({})))
        assert.are.same({ "\0\255" }, one("SELECT $1::bytea[] AS v", kronos.array({ kronos.bytea("\0\255") })))
        assert.are.equal(2, one("SELECT cardinality($1::text[]) AS v", kronos.array({ "NULL", "null" })))
        local ok, err = pcall(conn.exec, conn, "SELECT $1::text[]", kronos.array({ "a\0b" }))
        assert.is_false(ok)
        assert.are.equal("bad_argument", err.code)
        ok, err = pcall(conn.exec, conn, "SELECT $1::text[]", kronos.array({ print }))
        assert.is_false(ok)
        assert.are.equal("bad_argument", err.code)
    end)

    it("kronos.json encodes through the connection's encoder, also in COPY and arrays", function()
        local doc = { name = "x", list = { 1, 2, 3 } }
        assert.are.same(doc, one("SELECT $1::jsonb AS v", kronos.json(doc)))
        assert(conn:exec("CREATE TABLE docs (id int, body jsonb, tags text[])"))
        assert.are.equal(1, conn:copy_from("COPY docs FROM STDIN", { { 1, kronos.json(doc), kronos.array({ "a\tb", "c" }) } }))
        local r = conn:exec("SELECT body, tags FROM docs")[1]
        assert.are.same(doc, r.body)
        assert.are.same({ "a\tb", "c" }, r.tags)
        local c = assert(kronos.connect(url))
        finally(function() c:close() end)
        local ok, err = pcall(c.exec, c, "SELECT $1::jsonb", kronos.json(doc))
        assert.is_false(ok)
        assert.are.equal("bad_argument", err.code)
        assert.matches("set_encode", tostring(err), 1, true)
    end)
end)
