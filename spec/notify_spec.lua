-- Notifications (LISTEN/NOTIFY) and notices (src/notify.c, src/notice.c).
local kronos = require "kronos"
local H = require "spec.helper"

describe("notifications and notices", function()
    local url, dbname, conn, other

    setup(function()
        url, dbname = H.fresh_db("notify")
        conn = assert(kronos.connect(url))
        other = assert(kronos.connect(url))
    end)

    teardown(function()
        conn:close()
        other:close()
        H.drop_db(dbname)
    end)

    it("wait_for_notification returns {channel, payload, pid}", function()
        assert(conn:exec("LISTEN jobs"))
        assert(other:exec("SELECT pg_notify('jobs', $1)", "job 42"))
        local n = assert(conn:wait_for_notification(5))
        assert.are.same({ channel = "jobs", payload = "job 42", pid = other:backend_pid() }, n)
        assert(conn:exec("UNLISTEN jobs"))
    end)

    it("a timeout of 0 only polls, and an expired wait says timeout", function()
        assert(conn:exec("LISTEN quiet"))
        local n, err = conn:wait_for_notification(0)
        assert.is_nil(n)
        assert.are.equal("timeout", err.code)
        assert.is_true(kronos.is_error(err))
        n, err = conn:wait_for_notification(0.05)
        assert.is_nil(n)
        assert.are.equal("timeout", err.code)
        assert(conn:exec("UNLISTEN quiet"))
    end)

    it("keeps notifications that arrive while other statements run, in order", function()
        assert(conn:exec("LISTEN a"))
        assert(conn:exec("LISTEN b"))
        assert(other:exec("NOTIFY a, 'one'"))
        assert(other:exec("NOTIFY b, 'two'"))
        assert(other:exec("NOTIFY a"))
        -- conn reads them while running its own statement
        assert.are.equal(1, conn:exec("SELECT 1 AS x")[1].x)
        local list = assert(conn:notifications())
        assert.are.equal(3, #list)
        assert.are.same({ "a", "one" }, { list[1].channel, list[1].payload })
        assert.are.same({ "b", "two" }, { list[2].channel, list[2].payload })
        assert.are.same({ "a", "" }, { list[3].channel, list[3].payload })
        assert.are.same({}, conn:notifications())
        assert(conn:exec("UNLISTEN *"))
    end)

    it("notifications() returns what arrived without any statement", function()
        assert(conn:exec("LISTEN c"))
        assert(other:exec("NOTIFY c, 'x'"))
        -- wait on the state: the notification reaches conn's socket eventually
        local got
        for _ = 1, 200 do
            got = conn:notifications()
            if #got > 0 then break end
            assert(conn:exec("SELECT pg_sleep(0.01)"))
        end
        assert.are.equal(1, #got)
        assert.are.equal("x", got[1].payload)
        assert(conn:exec("UNLISTEN c"))
    end)

    it("wakes a waiting connection", function()
        -- another process notifies after the wait began
        local cmd = ("sleep 0.2; %s -e %s"):format(H.lua, H.shell_quote(([[
            package.path = %q; package.cpath = %q
            local c = assert(require("kronos").connect(%q)); assert(c:exec("NOTIFY late, 'hi'"))]]):format(
                package.path, package.cpath, url)))
        assert(conn:exec("LISTEN late"))
        local p = io.popen(cmd .. " &")
        local n = assert(conn:wait_for_notification(10))
        p:close()
        assert.are.equal("late", n.channel)
        assert.are.equal("hi", n.payload)
        assert(conn:exec("UNLISTEN late"))
    end)

    it("delivers notices to on_notice as error-like objects, after the call", function()
        local got = {}
        conn:on_notice(function(n) got[#got + 1] = n end)
        assert(conn:exec([[DO $$ BEGIN
            RAISE NOTICE 'first %', 1 USING DETAIL = 'the detail';
            RAISE WARNING 'second' USING ERRCODE = '01000';
        END $$]]))
        assert.are.equal(2, #got)
        assert.is_true(kronos.is_error(got[1]))
        assert.are.equal("first 1", got[1].message)
        assert.are.equal("NOTICE", got[1].severity)
        assert.are.equal("the detail", got[1].detail)
        assert.are.equal("00000", got[1].sqlstate)
        assert.are.equal("successful_completion", got[1].code)
        assert.are.equal("WARNING", got[2].severity)
        assert.are.equal("warning", got[2].code)
        assert.matches("first 1", tostring(got[1]), 1, true)
        -- DDL notices too
        got = {}
        assert(conn:exec("DROP TABLE IF EXISTS nothing_here"))
        assert.are.equal(1, #got)
        assert.matches("does not exist, skipping", got[1].message, 1, true)
    end)

    it("a raising handler raises from the call; the connection stays usable", function()
        conn:on_notice(function(n) error("handler saw " .. n.message, 0) end)
        local ok, err = pcall(conn.exec, conn, "DO $$ BEGIN RAISE NOTICE 'boom'; END $$")
        assert.is_false(ok)
        assert.are.equal("handler saw boom", err)
        conn:on_notice(nil)
        assert.are.equal(2, conn:exec("SELECT 2 AS x")[1].x)
    end)

    it("without a handler notices are dropped", function()
        conn:on_notice(nil)
        assert(conn:exec("DO $$ BEGIN RAISE NOTICE 'unseen'; END $$"))
        local got = {}
        conn:on_notice(function(n) got[#got + 1] = n end)
        assert(conn:exec("SELECT 1"))
        assert.are.same({}, got)
        conn:on_notice(nil)
    end)

    it("notices from conn:rows and conn:transaction reach the handler", function()
        local got = {}
        conn:on_notice(function(n) got[#got + 1] = n.message end)
        assert(conn:exec([[CREATE FUNCTION noisy(i int) RETURNS int LANGUAGE plpgsql AS
            $$ BEGIN RAISE NOTICE 'row %', i; RETURN i; END $$]]))
        local n = 0
        for _ in conn:rows("SELECT noisy(g) FROM generate_series(1, 3) g") do n = n + 1 end
        assert.are.equal(3, n)
        assert.are.same({ "row 1", "row 2", "row 3" }, got)
        conn:on_notice(nil)
    end)

    it("checks its arguments", function()
        local ok, err = pcall(conn.on_notice, conn, 42)
        assert.is_false(ok)
        assert.are.equal("bad_argument", err.code)
        ok, err = pcall(conn.wait_for_notification, conn, -1)
        assert.is_false(ok)
        assert.are.equal("bad_argument", err.code)
    end)
end)
