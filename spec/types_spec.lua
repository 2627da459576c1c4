-- Type conversion both ways (src/result.c, src/params.c, src/convert.c), against the real server.
local kronos = require "kronos"
local H = require "spec.helper"

local INT8_MAX = "9223372036854775807"
local INT8_MIN = "-9223372036854775808"

describe("kronos types", function()
    local dbname, conn

    setup(function()
        local url
        url, dbname = H.fresh_db("types")
        conn = assert(kronos.connect(url))
    end)

    teardown(function()
        conn:close()
        H.drop_db(dbname)
    end)

    local function one(sql, ...)
        local r = assert(conn:exec(sql, ...))
        return r[1].v
    end

    local function isnan(x) return x ~= x end

    describe("results", function()
        it("NULL is nil, bool is boolean", function()
            local r = conn:exec("SELECT NULL::int AS n, true AS t, false AS f, NULL::bool AS nb")[1]
            assert.is_nil(r.n)
            assert.is_nil(r.nb)
            assert.is_true(r.t)
            assert.is_false(r.f)
        end)

        it("int2 and int4 at their edges, and oid", function()
            local r = conn:exec([[SELECT (-32768)::int2 AS a, 32767::int2 AS b, (-2147483648)::int4 AS c,
                2147483647::int4 AS d, 4294967295::oid AS o, 0::int4 AS z]])[1]
            assert.are.same({ a = -32768, b = 32767, c = -2147483648, d = 2147483647, o = 4294967295, z = 0 }, r)
            assert.are.equal("number", type(r.o))
        end)

        if not H.luajit then
            it("int8 is an exact integer over its whole range (Lua 5.4)", function()
                local r = conn:exec(("SELECT %s::int8 AS mx, (%s)::int8 AS mn, 9007199254740993::int8 AS odd")
                    :format(INT8_MAX, INT8_MIN))[1]
                assert.are.equal(math.maxinteger, r.mx)
                assert.are.equal(math.mininteger, r.mn)
                assert.are.equal(9007199254740993, r.odd)
                assert.are.equal("integer", math.type(r.mx))
                assert.are.equal("integer", math.type(r.odd))
            end)
        else
            it("int8 is a number up to 2^53 and the exact decimal string beyond (LuaJIT)", function()
                local r = conn:exec(([[SELECT 9007199254740992::int8 AS edge, (-9007199254740992)::int8 AS nedge,
                    9007199254740993::int8 AS odd, %s::int8 AS mx, (%s)::int8 AS mn, 42::int8 AS small]])
                    :format(INT8_MAX, INT8_MIN))[1]
                assert.are.equal(2 ^ 53, r.edge)
                assert.are.equal(-(2 ^ 53), r.nedge)
                assert.are.equal(42, r.small)
                assert.are.equal("9007199254740993", r.odd)
                assert.are.equal(INT8_MAX, r.mx)
                assert.are.equal(INT8_MIN, r.mn)
            end)
        end

        it("float8 and float4 with NaN, +-Infinity, extremes and -0", function()
            local r = conn:exec([[SELECT 'NaN'::float8 AS nan, 'Infinity'::float8 AS inf, '-Infinity'::float8 AS ninf,
                0.1::float8 AS tenth, 1.7976931348623157e308::float8 AS big, 5e-324::float8 AS tiny,
                '-0'::float8 AS nzero, 'NaN'::float4 AS nan4, 'Infinity'::float4 AS inf4, 1.5::float4 AS f4]])[1]
            assert.is_true(isnan(r.nan))
            assert.is_true(isnan(r.nan4))
            assert.are.equal(math.huge, r.inf)
            assert.are.equal(math.huge, r.inf4)
            assert.are.equal(-math.huge, r.ninf)
            assert.are.equal(0.1, r.tenth)
            assert.are.equal(1.7976931348623157e308, r.big)
            assert.are.equal(5e-324, r.tiny)
            assert.are.equal(1.5, r.f4)
            assert.are.equal(0, r.nzero)
            assert.are.equal(-math.huge, 1 / r.nzero)
        end)

        it("numeric is its exact text", function()
            local r = conn:exec([[SELECT 12345678901234567890.123456789012345678::numeric AS big, 1.50::numeric(5,2) AS two,
                'NaN'::numeric AS nan, (-0.000000000000000001)::numeric AS small, 10::numeric AS ten]])[1]
            assert.are.same({ big = "12345678901234567890.123456789012345678", two = "1.50", nan = "NaN",
                small = "-0.000000000000000001", ten = "10" }, r)
        end)

        it("text of exact length: empty, multibyte, padded char, 1 MB", function()
            local r = conn:exec([[SELECT ''::text AS e, 'héllo wörld ✓'::text AS u, 'ab'::char(5) AS c,
                'x'::varchar(3) AS vc, repeat('abcdefghij', 104858) AS big]])[1]
            assert.are.equal("", r.e)
            assert.are.equal("héllo wörld ✓", r.u)
            assert.are.equal("ab   ", r.c)
            assert.are.equal("x", r.vc)
            assert.are.equal(1048580, #r.big)
            assert.are.equal(("abcdefghij"):rep(104858), r.big)
        end)

        it("bytea is the raw bytes, NULs included, in hex and escape output", function()
            local all = {}
            for i = 0, 255 do all[#all + 1] = string.char(i) end
            all = table.concat(all)
            local r = conn:exec([[SELECT '\x00ff00'::bytea AS nuls, ''::bytea AS empty,
                decode(repeat('00ab', 262144), 'hex') AS mb, $1::bytea AS all]], kronos.bytea(all))[1]
            assert.are.equal("\0\255\0", r.nuls)
            assert.are.equal("", r.empty)
            assert.are.equal(("\0\171"):rep(262144), r.mb)
            assert.are.equal(all, r.all)
            conn:exec("SET bytea_output = 'escape'")
            local e = conn:exec([[SELECT '\x00ff005c27'::bytea AS v, $1::bytea AS all]], kronos.bytea(all))[1]
            conn:exec("RESET bytea_output")
            assert.are.equal("\0\255\0\\'", e.v)
            assert.are.equal(all, e.all)
        end)

        it("uuid is the lowercase canonical string", function()
            assert.are.equal("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
                one("SELECT 'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11'::uuid AS v"))
        end)

        it("timestamptz is ISO 8601 in UTC with the microseconds the server has", function()
            local r = conn:exec([[SELECT '2026-11-23 20:57:01.123456+00'::timestamptz AS a,
                '2026-11-23 20:57:01+00'::timestamptz AS b, '2026-11-23 20:57:01.5+00'::timestamptz AS c,
                '2000-02-29 23:59:59.999999-01'::timestamptz AS leap]])[1]
            assert.are.equal("2026-11-23T20:57:01.123456Z", r.a)
            assert.are.equal("2026-11-23T20:57:01Z", r.b)
            assert.are.equal("2026-11-23T20:57:01.5Z", r.c)
            assert.are.equal("2000-03-01T00:59:59.999999Z", r.leap)
        end)

        it("timestamptz converts a non-UTC session's offsets back to UTC", function()
            local sql = [[SELECT '2026-11-23 20:57:01.123456+00'::timestamptz AS a,
                '1900-01-01 00:00:00+00'::timestamptz AS lmt, '2026-01-01 00:30:00+00'::timestamptz AS newyear]]
            local want = { a = "2026-11-23T20:57:01.123456Z", lmt = "1900-01-01T00:00:00Z", newyear = "2026-01-01T00:30:00Z" }
            for _, tz in ipairs({ "Asia/Kolkata", "America/St_Johns", "Europe/Amsterdam", "Pacific/Kiritimati" }) do
                conn:exec("SET TimeZone TO " .. conn:escape_literal(tz))
                local raw = conn:exec("SELECT (" .. sql:match("'1900[^']*'") .. "::timestamptz)::text AS t")[1].t
                assert.are.same(want, conn:exec(sql)[1], tz .. " (server text of 1900: " .. raw .. ")")
            end
            conn:exec("SET TimeZone TO 'UTC'")
        end)

        it("timestamptz BC dates use ISO year numbering, infinity stays text", function()
            local r = conn:exec([[SELECT '0044-03-15 12:00:00+00 BC'::timestamptz AS ides,
                '0001-01-01 00:00:00+00 BC'::timestamptz AS onebc, '0001-01-01 00:00:00+00'::timestamptz AS ad1,
                'infinity'::timestamptz AS inf, '-infinity'::timestamptz AS ninf,
                '294276-12-31 23:59:59.999999+00'::timestamptz AS last]])[1]
            assert.are.equal("-0043-03-15T12:00:00Z", r.ides)
            assert.are.equal("0000-01-01T00:00:00Z", r.onebc)
            assert.are.equal("0001-01-01T00:00:00Z", r.ad1)
            assert.are.equal("infinity", r.inf)
            assert.are.equal("-infinity", r.ninf)
            assert.are.equal("294276-12-31T23:59:59.999999Z", r.last)
            conn:exec("SET TimeZone TO 'Asia/Kolkata'")
            local bc = conn:exec("SELECT '0001-01-01 02:00:00+00 BC'::timestamptz AS v")[1].v
            conn:exec("SET TimeZone TO 'UTC'")
            assert.are.equal("0000-01-01T02:00:00Z", bc)
        end)

        it("date, json, jsonb, arrays, interval and others are their text", function()
            local r = conn:exec([[SELECT '2026-11-23'::date AS d, '{"a": [1, 2]}'::json AS j, '{"b":1, "a":2}'::jsonb AS jb,
                ARRAY[1, 2, NULL] AS arr, '1 day 02:00'::interval AS iv, '127.0.0.1'::inet AS ip,
                '2026-11-23 20:57:01'::timestamp AS ts]])[1]
            assert.are.same({ d = "2026-11-23", j = '{"a": [1, 2]}', jb = '{"a": 2, "b": 1}', arr = "{1,2,NULL}",
                iv = "1 day 02:00:00", ip = "127.0.0.1", ts = "2026-11-23 20:57:01" }, r)
        end)
    end)

    describe("parameters", function()
        it("nil and kronos.null are NULL", function()
            local r = conn:exec("SELECT $1::int IS NULL AS a, $2::text IS NULL AS b, $3::int AS c", nil, kronos.null, 3)
            assert.are.same({ a = true, b = true, c = 3 }, r[1])
        end)

        it("booleans", function()
            local r = conn:exec("SELECT $1 AS t, $2 AS f, pg_typeof($1)::text AS ty", true, false)[1]
            assert.are.same({ t = true, f = false, ty = "boolean" }, r)
        end)

        it("integers exactly, at the int8 edges", function()
            assert.are.equal(-32768, one("SELECT $1::int2 AS v", -32768))
            assert.are.equal(2147483647, one("SELECT $1::int4 AS v", 2147483647))
            if not H.luajit then
                assert.are.equal(math.maxinteger, one("SELECT $1::int8 AS v", math.maxinteger))
                assert.are.equal(math.mininteger, one("SELECT $1::int8 AS v", math.mininteger))
                assert.are.equal(INT8_MAX, one("SELECT ($1::int8)::text AS v", math.maxinteger))
                assert.are.equal(9007199254740993, one("SELECT $1::int8 AS v", 9007199254740993))
            else
                -- LuaJIT: integral doubles are sent as integers; beyond 2^53 pass the string back
                assert.are.equal("1152921504606846976", one("SELECT $1::int8 AS v", 2 ^ 60))
                assert.are.equal(INT8_MAX, one("SELECT $1::int8 AS v", INT8_MAX))
                assert.are.equal(INT8_MIN, one("SELECT $1::int8 AS v", INT8_MIN))
            end
            assert.are.equal("1152921504606846976", one("SELECT ($1::int8)::text AS v", 2 ^ 60))
            local r, err = conn:exec("SELECT $1::int4 AS v", 2147483648)
            assert.is_nil(r)
            assert.are.equal("numeric_value_out_of_range", err.code)
        end)

        it("floats round-trip exactly, in shortest form", function()
            local values = { 0.1, 1 / 3, -2.5, 1e-7, 123456.789, 5e-324, 2.2250738585072014e-308,
                1.7976931348623157e308, math.pi, -1e300, 0.30000000000000004 }
            for _, x in ipairs(values) do
                assert.are.equal(x, one("SELECT $1::float8 AS v", x))
            end
            -- the text sent is the shortest that reads back: what the server prints for the same double
            assert.are.equal("0.1", one("SELECT $1::text AS v", 0.1))
            assert.are.equal("0.30000000000000004", one("SELECT $1::text AS v", 0.30000000000000004))
            assert.is_true(one("SELECT $1::float8 = 0.1::float8 AS v", 0.1))
            assert.is_true(isnan(one("SELECT $1::float8 AS v", 0 / 0)))
            assert.are.equal(math.huge, one("SELECT $1::float8 AS v", math.huge))
            assert.are.equal(-math.huge, one("SELECT $1::float8 AS v", -math.huge))
            assert.are.equal("1.5", one("SELECT $1::numeric::text AS v", 1.5))
        end)

        it("strings as text, of any length and content but NUL", function()
            local big = ("0123456789abcdef"):rep(65536)
            assert.are.equal(#big, one("SELECT length($1::text) AS v", big))
            assert.are.equal(big, one("SELECT $1::text AS v", big))
            assert.are.equal("", one("SELECT $1::text AS v", ""))
            assert.are.equal(0, one("SELECT length($1::text) AS v", ""))
            assert.are.equal("héllo ✓", one("SELECT $1::text AS v", "héllo ✓"))
            assert.are.equal(7, one("SELECT length($1::text) AS v", "héllo ✓"))
        end)

        it("a string with a NUL byte raises naming the parameter", function()
            assert.has_error(function() conn:exec("SELECT $1::text, $2::text", "ok", "a\0b") end,
                "bad argument #3 to 'exec' (parameter $2 contains a NUL byte (send binary data with kronos.bytea))"
                .. " [bad_argument]")
            assert.has_error(function() conn:rows("SELECT $1::text", "\0") end)
        end)

        it("kronos.bytea(s) sends raw bytes", function()
            local s = "\0\1\2\255\0" .. ("\0"):rep(1000)
            assert.are.equal(#s, one("SELECT length($1::bytea) AS v", kronos.bytea(s)))
            assert.are.equal(s, one("SELECT $1::bytea AS v", kronos.bytea(s)))
            assert.are.equal("\\x0001", one("SELECT $1::bytea::text AS v", kronos.bytea("\0\1")))
            assert.are.equal("", one("SELECT $1::bytea AS v", kronos.bytea("")))
            assert.has_error(function() kronos.bytea(12) end)
        end)

        it("any other type raises naming the parameter", function()
            assert.has_error(function() conn:exec("SELECT $1", {}) end,
                "bad argument #2 to 'exec' (parameter $1: unsupported type table) [bad_argument]")
            assert.has_error(function() conn:exec("SELECT $1, $2", 1, print) end,
                "bad argument #3 to 'exec' (parameter $2: unsupported type function) [bad_argument]")
            assert.has_error(function() conn:exec("SELECT $1", io.stdout) end)
            assert.has_error(function() conn:exec("SELECT $1", coroutine.create(print)) end)
        end)

        it("an int8 result read back as a parameter keeps its value", function()
            local v = one(("SELECT %s::int8 AS v"):format(INT8_MAX))
            assert.is_true(one("SELECT $1::int8 = " .. INT8_MAX .. " AS v", v))
            v = one("SELECT 123456789012::int8 AS v")
            assert.are.equal(123456789012, one("SELECT $1::int8 AS v", v))
        end)
    end)

    describe("exactness", function()
        it("integral floats in [-2^63, 2^63) go as integers, both ends included", function()
            -- on LuaJIT these are floats; on Lua 5.4 they are floats too (math.mininteger is not)
            local lo = -9223372036854775807 - 1
            assert.are.equal(-2 ^ 63, lo + 0.0)
            assert.are.equal(INT8_MIN, one("SELECT $1::int8::text AS v", -2 ^ 63))
            assert.are.equal(INT8_MIN, one("SELECT $1::int8::text AS v", lo))
            assert.are.equal("-9007199254740993", one("SELECT ($1::int8 - 1)::text AS v", -2 ^ 53))
            assert.are.equal("4611686018427387904", one("SELECT $1::int8::text AS v", 2 ^ 62))
            -- 2^63 itself is out of int8's range: it goes as a float and the server says so
            local r, err = conn:exec("SELECT $1::int8 AS v", 2 ^ 63)
            assert.is_nil(r)
            assert.are.equal("invalid_text_representation", err.code)
        end)

        it("timestamptz stays ISO 8601 UTC whatever DateStyle the session sets", function()
            local c = assert(kronos.connect(H.url_for(dbname)))
            finally(function() c:close() end)
            local ts = "2026-11-23T20:57:01.123456Z"
            for _, style in ipairs({ "SQL, DMY", "Postgres, MDY", "German", "SQL, MDY" }) do
                assert(c:exec("SET DateStyle = '" .. style .. "'"))
                assert.are.equal(ts, c:exec("SELECT '2026-11-23 20:57:01.123456+00'::timestamptz AS v")[1].v)
                assert.are.equal("2026-11-23", c:exec("SELECT '2026-11-23'::date::text AS v")[1].v)
                for row in c:rows("SELECT $1::timestamptz AS v", "2026-11-23 20:57:01.123456+00") do
                    assert.are.equal(ts, row.v)
                end
            end
            -- the field order the user chose still reads input dates
            assert(c:exec("SET DateStyle = 'SQL, DMY'"))
            assert.are.equal("2026-02-01", c:exec("SELECT '01/02/2026'::date::text AS v")[1].v)
            assert.matches("^ISO, DMY", c:exec("SHOW DateStyle")[1].DateStyle)
            -- users:list reads timestamps: it keeps working
            assert(c:exec([[CREATE TABLE users (id uuid PRIMARY KEY, email text, first_name text, last_name text,
                profile_image_url text, is_active boolean NOT NULL DEFAULT true, last_login timestamptz,
                created_at timestamptz NOT NULL DEFAULT now(), updated_at timestamptz NOT NULL DEFAULT now())]]))
            finally(function() c:exec("DROP TABLE IF EXISTS users") end)
            assert(c:exec("INSERT INTO users (id, email, first_name, last_name) VALUES ($1, 'a@b.c', 'A', 'B')", kronos.uuid()))
            assert(c:exec("INSERT INTO users (id, email, first_name, last_name) VALUES ($1, 'd@e.f', 'D', 'E')", kronos.uuid()))
            assert(c:exec("SET DateStyle = 'SQL, DMY'"))
            local users = kronos.users(c)
            local page, cursor = assert(users:list({ limit = 1 }))
            assert.matches("^%d%d%d%d%-%d%d%-%d%dT[%d:.]+Z$", page[1].created_at)
            assert.is_string(cursor)
            assert(c:exec("SET DateStyle = 'Postgres, MDY'"))
            local rest = assert(users:list({ limit = 1, after = cursor }))
            assert.are.equal(1, #rest)
            assert.are_not.equal(page[1].email, rest[1].email)
        end)
    end)
end)
