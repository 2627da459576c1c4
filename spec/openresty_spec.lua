-- The OpenResty example (examples/openresty) on real nginx instances (tools/nginx.sh) against the
-- test server, driven with curl. A missing nginx, Lua module or curl fails this file.
local H = require "spec.helper"
local kronos = require "kronos"
local cjson = require "cjson.safe"

local trim, q, sh, slurp, spit = H.trim, H.shell_quote, H.sh, H.read_file, H.write_file

local nginx_sh = H.root .. "/tools/nginx.sh"
-- curl, nginx are not built with the sanitizers a memory-checked run preloads
local clean_env = "env -u LD_PRELOAD -u ASAN_OPTIONS -u LSAN_OPTIONS -u UBSAN_OPTIONS "

-- Starts one nginx per prefix in `prefixes`, all at the same moment; returns, per prefix, the
-- exit status of tools/nginx.sh and its output (the base URL, or why nginx refused to start).
local started = {} -- every prefix ever started: the last teardown stops them all
local function start_all(prefixes, env, conf)
    for _, p in ipairs(prefixes) do started[#started + 1] = p end
    local vars = {}
    for k, v in pairs(env) do vars[#vars + 1] = k .. "=" .. q(v) end
    local cmd = {}
    for _, p in ipairs(prefixes) do
        cmd[#cmd + 1] = ("(%s sh %s start %s %s > %s.out 2>&1; echo $? > %s.rc) &"):format(
            table.concat(vars, " "), q(nginx_sh), q(p), conf and q(conf) or "", q(p), q(p))
    end
    cmd[#cmd + 1] = "wait"
    sh(table.concat(cmd, " "))
    local codes, outs = {}, {}
    for i, p in ipairs(prefixes) do
        codes[i] = tonumber(trim(slurp(p .. ".rc") or ""))
        outs[i] = trim(slurp(p .. ".out") or "")
    end
    return codes, outs
end

local function stop(prefix)
    H.run(("sh %s stop %s"):format(q(nginx_sh), q(prefix)))
end

-- One HTTP request through curl: status, decoded JSON body (or nil), raw body. Every status line
-- must carry a reason phrase ("HTTP/1.1 400 Bad Request", never "HTTP/1.1 422 ").
local function http(tmp, method, url, body)
    local cmd = { clean_env .. "curl -sS --max-time 10 -X", method, "-o", q(tmp .. "/resp"),
                  "-D", q(tmp .. "/head"), "-w '%{http_code}'" }
    if body then
        spit(tmp .. "/req", body)
        cmd[#cmd + 1] = "-H 'Content-Type: application/json' --data-binary @" .. q(tmp .. "/req")
    end
    cmd[#cmd + 1] = q(url)
    local out = sh(table.concat(cmd, " "))
    local raw = slurp(tmp .. "/resp") or ""
    local status_line = (slurp(tmp .. "/head") or ""):match("^[^\r\n]*")
    assert.matches("^HTTP/1%.1 %d%d%d [%a ]+%a$", status_line)
    return tonumber(out:match("(%d%d%d)$")), cjson.decode(raw), raw
end

-- The sockets of process `pid` connected to TCP port `port` (from /proc).
local function sockets_to(pid, port)
    local inodes = {}
    for inode in sh("ls -l /proc/" .. pid .. "/fd"):gmatch("socket:%[(%d+)%]") do inodes[inode] = true end
    local found = 0
    for _, table_name in ipairs { "tcp", "tcp6" } do
        for line in (slurp("/proc/" .. pid .. "/net/" .. table_name) or ""):gmatch("[^\n]+") do
            local rport, inode = line:match("^%s*%d+:%s+%x+:%x+%s+%x+:(%x+)%s+%x+%s+%x+:%x+%s+%x+:%x+%s+%x+%s+%d+%s+%d+%s+(%d+)")
            if rport and inodes[inode] and tonumber(rport, 16) == port then found = found + 1 end
        end
    end
    return found
end

local function server_port(url)
    return assert(tonumber(url:match("^postgres%a*://[^/]*:(%d+)")), "a URL with a port: " .. url)
end

describe("OpenResty example", function()
    local tmp -- everything this file starts lives under it

    setup(function()
        tmp = sh("mktemp -d /tmp/kronos-nginx.XXXXXX")
        sh("chmod 755 " .. q(tmp))
        -- nginx runs LuaJIT: kronos.core must be built for it, whichever Lua runs this suite.
        sh(("make -s -C %s LUA=luajit"):format(q(H.root)))
    end)

    teardown(function()
        for _, p in ipairs(started) do stop(p) end
        if tmp then H.run("rm -rf " .. q(tmp)) end
    end)

    describe("three instances starting at once on a fresh database", function()
        local url, dbname
        local prefixes, codes, outs = {}, {}, {}

        setup(function()
            url, dbname = H.fresh_db("ngx")
            for i = 1, 3 do prefixes[i] = ("%s/up%d"):format(tmp, i) end
            codes, outs = start_all(prefixes, { DATABASE_URL = url })
        end)

        teardown(function()
            for _, p in ipairs(prefixes) do stop(p) end
            if dbname then H.drop_db(dbname) end
        end)

        it("all come up", function()
            for i = 1, 3 do
                assert.equals(0, codes[i], outs[i])
                assert.matches("^http://127%.0%.0%.1:%d+$", outs[i])
            end
        end)

        it("created the users table once", function()
            local db = assert(kronos.connect(url))
            finally(function() db:close() end)
            assert.same({ n = 1, users = true }, assert(db:exec(
                "SELECT count(*) AS n, to_regclass('users') IS NOT NULL AS users FROM kronos_version"))[1])
            -- each master logged what it applied: one of them applied the migration
            local logged = {}
            for i, p in ipairs(prefixes) do
                logged[i] = slurp(p .. "/logs/error.log"):match("init_by_lua[^\n]*kronos: ([^\n]*)")
            end
            table.sort(logged)
            assert.same({ "applied 1 migration: 4f1c2a9e7b30", "the schema is at head, no migration to apply",
                          "the schema is at head, no migration to apply" }, logged)
        end)

        it("the masters hold no database connection after the fork", function()
            local port = server_port(url)
            for _, p in ipairs(prefixes) do
                local pid = assert(tonumber(trim(slurp(p .. "/logs/nginx.pid"))))
                assert.equals(0, sockets_to(pid, port))
            end
        end)

        it("serves POST /users: 201 with every field (NULL as null), 409 on a duplicate, 400 when invalid", function()
            local base = outs[1]
            local status, user = http(tmp, "POST", base .. "/users",
                '{"email": "ada@example.com", "first_name": "Ada", "last_name": "Lovelace"}')
            assert.equals(201, status)
            assert.is_true(kronos.is_uuid(user.id))
            assert.equals("ada@example.com", user.email)
            assert.equals("Ada", user.first_name)
            assert.equals(true, user.is_active)
            -- SQL NULLs are JSON null, not absent keys
            assert.equals(cjson.null, user.profile_image_url)
            assert.equals(cjson.null, user.last_login)
            local keys = {}
            for k in pairs(user) do keys[#keys + 1] = k end
            table.sort(keys)
            assert.same({ "created_at", "email", "first_name", "id", "is_active", "last_login", "last_name",
                          "profile_image_url", "updated_at" }, keys)

            local dup, body = http(tmp, "POST", outs[2] .. "/users", '{"email": "ada@example.com"}')
            assert.equals(409, dup)
            assert.equals("duplicate_email", body.error.code)

            local bad, invalid = http(tmp, "POST", base .. "/users", '{"email": "not an email"}')
            assert.equals(400, bad)
            assert.equals("invalid_email", invalid.error.code)

            local code, err = http(tmp, "POST", base .. "/users", '{"email": ')
            assert.equals(400, code)
            assert.equals("invalid_json", err.error.code)
            -- an array, even an empty one (which cjson decodes like {}), is not a user
            for _, array in ipairs { '["ada@example.com"]', "[]", " [ ] " } do
                code, err = http(tmp, "POST", base .. "/users", array)
                assert.equals(400, code)
                assert.same({ code = "invalid_body", message = "a JSON object is expected as the request body" }, err.error)
            end
        end)

        it("serves GET /users/<id>: 200 with the user, 404 otherwise", function()
            local status, created = http(tmp, "POST", outs[1] .. "/users", '{"email": "grace@example.com"}')
            assert.equals(201, status)
            -- read through another instance: they share the database
            local ok, user = http(tmp, "GET", outs[3] .. "/users/" .. created.id)
            assert.equals(200, ok)
            assert.same(created, user)
            assert.equals(404, (http(tmp, "GET", outs[2] .. "/users/" .. kronos.uuid())))
            assert.equals(404, (http(tmp, "GET", outs[2] .. "/users/not-a-uuid")))
        end)

        it("pages GET /users?limit=&after= to the end", function()
            local want = {}
            for i = 1, 5 do
                local status, user = http(tmp, "POST", outs[(i % 3) + 1] .. "/users",
                    ('{"email": "page%d@example.com"}'):format(i))
                assert.equals(201, status)
                want[user.id] = true
            end
            local seen, pages, after = {}, 0, nil
            repeat
                local u = outs[(pages % 3) + 1] .. "/users?limit=2" .. (after and "&after=" .. after or "")
                local status, page = http(tmp, "GET", u)
                assert.equals(200, status)
                assert.is_true(#page.users <= 2)
                for _, user in ipairs(page.users) do
                    assert.is_nil(seen[user.id])
                    seen[user.id] = true
                end
                after = page.next ~= cjson.null and page.next or nil
                pages = pages + 1
            until not after or pages > 10
            for id in pairs(want) do assert.is_true(seen[id]) end
            assert.is_true(pages >= 3 and pages <= 10)
            assert.equals(400, (http(tmp, "GET", outs[1] .. "/users?limit=two")))
        end)
    end)

    it("refuses to start when a migration fails, and logs the migration's file", function()
        local url, dbname = H.fresh_db("ngxbad")
        local prefix = tmp .. "/failing"
        local db
        -- busted keeps one finally per test: it cleans up everything
        finally(function()
            if db then db:close() end
            stop(prefix)
            H.drop_db(dbname)
        end)
        local fixture = H.root .. "/spec/fixtures/openresty/failing"
        local codes, outs = start_all({ prefix }, { DATABASE_URL = url, KRONOS_MIGRATIONS = fixture })
        assert.equals(1, codes[1], outs[1])
        local log = slurp(prefix .. "/logs/error.log")
        assert.matches("init_by_lua error", log, 1, true)
        assert.matches("7d3e5a1c9b02_add_nickname.lua", log, 1, true)
        assert.matches("usrs", log, 1, true)
        -- no nginx left behind, and the failed revision is not recorded
        assert.is_nil(slurp(prefix .. "/logs/nginx.pid"))
        db = assert(kronos.connect(url))
        local current = require("kronos.migrate").current { db = db, dir = fixture }
        for _, rev in ipairs(current) do assert.not_equals("7d3e5a1c9b02", rev) end
    end)

    it("a reload whose migration fails keeps the running workers serving", function()
        local url, dbname = H.fresh_db("ngxreload")
        local prefix = tmp .. "/reload"
        finally(function()
            stop(prefix)
            H.drop_db(dbname)
        end)
        local codes, outs = start_all({ prefix }, { DATABASE_URL = url })
        assert.equals(0, codes[1], outs[1])
        assert.equals(201, (http(tmp, "POST", outs[1] .. "/users", '{"email": "before@example.com"}')))
        -- deploy a failing migration and reload (HUP): init_by_lua runs again in the master
        sh(("rm -rf %s && cp -RL %s %s"):format(q(prefix .. "/migrations"),
            q(H.root .. "/spec/fixtures/openresty/failing"), q(prefix .. "/migrations")))
        local pid = trim(slurp(prefix .. "/logs/nginx.pid"))
        sh("kill -HUP " .. pid)
        local log
        for _ = 1, 100 do
            log = slurp(prefix .. "/logs/error.log")
            if log:find("init_by_lua error", 1, true) then break end
            sh("sleep 0.05")
        end
        assert.matches("reconfiguring.*init_by_lua error: [^\n]*7d3e5a1c9b02_add_nickname%.lua", log)
        local status, page = http(tmp, "GET", outs[1] .. "/users")
        assert.equals(200, status)
        assert.equals("before@example.com", page.users[1].email)
        assert.equals(pid, trim(slurp(prefix .. "/logs/nginx.pid")))
    end)

    it("check variant: refuses to start on a stale schema, starts once it is at head", function()
        local url, dbname = H.fresh_db("ngxchk")
        local prefix = tmp .. "/check"
        local db
        finally(function()
            if db then db:close() end
            stop(prefix)
            H.drop_db(dbname)
        end)
        local conf = H.root .. "/examples/openresty/nginx-check.conf"
        local codes, outs = start_all({ prefix }, { DATABASE_URL = url }, conf)
        assert.equals(1, codes[1], outs[1])
        local log = slurp(prefix .. "/logs/error.log")
        assert.matches("kronos: the schema is not at head (pending: 4f1c2a9e7b30): run the migrations first", log, 1, true)
        -- check{} changed nothing
        db = assert(kronos.connect(url))
        assert.equals(0, #assert(db:exec("SELECT 1 FROM pg_class WHERE relname = 'users'")))

        local applied = require("kronos.migrate").upgrade { db = db, dir = H.root .. "/migrations" }
        assert.same({ "4f1c2a9e7b30" }, applied)
        codes, outs = start_all({ prefix }, { DATABASE_URL = url }, conf)
        assert.equals(0, codes[1], outs[1])
        local status, page = http(tmp, "GET", outs[1] .. "/users")
        assert.equals(200, status)
        assert.same({}, page.users)
        assert.equals(cjson.null, page.next)
    end)
end)
