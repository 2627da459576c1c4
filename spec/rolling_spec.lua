-- A rolling deploy of a two-phase migration through real nginx instances (tools/nginx.sh, the
-- OpenResty example's startup sequence): old code keeps serving between `upgrade` (run by the
-- new instance at startup) and `kronos finish` (run once the old instance is gone).
-- The service is a tiny greeting API; v1 code reads and writes greeting.name, v2 code
-- greeting.title. Migration g2 renames the column in two phases: up adds title and a trigger
-- that keeps both filled (old and new code write side by side), finish drops the old column.
local H = require "spec.helper"
local kronos = require "kronos"
local cjson = require "cjson.safe"

local q, sh = H.shell_quote, H.sh
local nginx_sh = H.root .. "/tools/nginx.sh"
local clean_env = "env -u LD_PRELOAD -u ASAN_OPTIONS -u LSAN_OPTIONS -u UBSAN_OPTIONS "

local APP = [[
local kronos = require "kronos"
local cjson = require "cjson.safe"
local M = {}
function M.handle()
    local db = assert(kronos.connect(os.getenv("DATABASE_URL")))
    local res, err
    if ngx.req.get_method() == "POST" then
        res, err = db:exec("INSERT INTO greeting (%s) VALUES ($1)", ngx.var.arg_who)
    else
        res, err = db:exec("SELECT %s AS who FROM greeting ORDER BY id")
    end
    db:close()
    if not res then
        ngx.status = 500
        ngx.say(cjson.encode({ error = tostring(err) }))
        return
    end
    local out = {}
    for i, r in ipairs(res) do out[i] = r.who end
    ngx.say(cjson.encode({ who = out }))
end
return M
]]

-- The startup of the OpenResty example: `upgrade` (nginx.conf) or the `check` gate
-- (nginx-check.conf), then the app module from APPDIR.
local CONF = [[
load_module /usr/lib/nginx/modules/ndk_http_module.so;
load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;
worker_processes 1;
pid logs/nginx.pid;
error_log logs/error.log info;
user nobody nogroup;
env DATABASE_URL;
env KRONOS_MIGRATIONS;
events { worker_connections 64; }
http {
    access_log off;
    client_body_temp_path tmp/body;
    proxy_temp_path tmp/proxy;
    fastcgi_temp_path tmp/fastcgi;
    uwsgi_temp_path tmp/uwsgi;
    scgi_temp_path tmp/scgi;
    lua_package_path "APPDIR/?.lua;${prefix}lua/?.lua;${prefix}lua/?/init.lua;;";
    lua_package_cpath "${prefix}lib/?.so;;";
    init_by_lua_block {
        local migrate = require "kronos.migrate"
        local opts = { url = os.getenv("DATABASE_URL"), dir = os.getenv("KRONOS_MIGRATIONS") }
        if "MODE" == "upgrade" then
            local ok, applied = pcall(migrate.upgrade, opts)
            if not ok then error(tostring(applied), 0) end
            ngx.log(ngx.NOTICE, "kronos: applied ", table.concat(applied, ","))
        else
            local ok, current, why = pcall(migrate.check, opts)
            if not ok then error(tostring(current), 0) end
            if not current then error("kronos: the schema is not at head", 0) end
            if why then ngx.log(ngx.NOTICE, "kronos: finish pending: ", table.concat(why.finish_pending, ",")) end
        end
        require "greet"
    }
    server {
        listen 127.0.0.1:8080;
        default_type application/json;
        location = /greet { content_by_lua_block { require("greet").handle() } }
    }
}
]]

local G1 = [[
return { revision = "g1", message = "greetings",
    up = function(op)
        op.create_table("greeting", { { name = "id", type = "bigserial", primary_key = true },
                                      { name = "name", type = "text", nullable = false } })
    end,
    down = function(op) op.drop_table("greeting") end }
]]

local G2 = [[
return { revision = "g2", down_revision = "g1", message = "title replaces name",
    up = function(op) -- expand: old code (name) and new code (title) both work
        op.add_column("greeting", { name = "title", type = "text" })
        op.execute("UPDATE greeting SET title = name")
        op.alter_column("greeting", "name", { nullable = true, safe = true })
        op.execute([=[CREATE FUNCTION greeting_sync() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                NEW.title := coalesce(NEW.title, NEW.name);
                NEW.name := coalesce(NEW.name, NEW.title);
                RETURN NEW;
            END $$;
            CREATE TRIGGER greeting_sync BEFORE INSERT OR UPDATE ON greeting
                FOR EACH ROW EXECUTE FUNCTION greeting_sync()]=])
    end,
    finish = function(op) -- contract: once no old code runs
        op.execute("DROP TRIGGER greeting_sync ON greeting; DROP FUNCTION greeting_sync()")
        op.drop_column("greeting", "name")
        op.alter_column("greeting", "title", { nullable = false, safe = true }) -- a small table
    end,
    down = function(op)
        op.execute("DROP TRIGGER greeting_sync ON greeting; DROP FUNCTION greeting_sync()")
        op.alter_column("greeting", "name", { nullable = false })
        op.drop_column("greeting", "title")
    end }
]]

describe("a rolling deploy with OpenResty", function()
    local tmp, url, dbname, db
    local started = {}

    local function write(path, text)
        H.write_file(path, text)
        sh("chmod a+r " .. q(path))
    end

    -- one nginx: code version (1 or 2), migrations (a directory), mode (upgrade or check)
    local function start(name, version, migrations, mode)
        local prefix = tmp .. "/" .. name
        local conf = ("%s/%s.conf"):format(tmp, name)
        write(conf, (CONF:gsub("APPDIR", tmp .. "/app" .. version):gsub("MODE", mode)))
        started[#started + 1] = prefix
        local code, out = H.run(("%sDATABASE_URL=%s KRONOS_MIGRATIONS=%s sh %s start %s %s"):format(
            clean_env, q(url), q(migrations), q(nginx_sh), q(prefix), q(conf)))
        return code, H.trim(out), prefix
    end

    local function stop(prefix) H.run(("sh %s stop %s"):format(q(nginx_sh), q(prefix))) end

    local function call(base, method, who)
        local out = sh(("%scurl -sS --max-time 10 -X %s -w ' %%{http_code}' %s"):format(clean_env, method,
            q(base .. "/greet" .. (who and "?who=" .. who or ""))))
        local body, status = out:match("^(.*) (%d%d%d)$")
        return tonumber(status), cjson.decode(body)
    end

    setup(function()
        tmp = sh("mktemp -d /tmp/kronos-rolling.XXXXXX")
        sh("chmod 755 " .. q(tmp))
        sh(("make -s -C %s LUA=luajit"):format(q(H.root)))
        for v, col in ipairs { "name", "title" } do
            sh(("mkdir -p %s/app%d %s/v%d && chmod 755 %s/app%d %s/v%d"):format(tmp, v, tmp, v, tmp, v, tmp, v))
            write(("%s/app%d/greet.lua"):format(tmp, v), APP:format(col, col))
        end
        write(tmp .. "/v1/g1.lua", G1)
        write(tmp .. "/v2/g1.lua", G1)
        write(tmp .. "/v2/g2.lua", G2)
        url, dbname = H.fresh_db("rolling")
        db = assert(kronos.connect(url))
    end)

    teardown(function()
        for _, p in ipairs(started) do stop(p) end
        if db then db:close() end
        if dbname then H.drop_db(dbname) end
        if tmp then H.run("rm -rf " .. q(tmp)) end
    end)

    it("old code serves between upgrade and finish; finish runs once it is gone", function()
        -- release 1
        local code, old = start("old", 1, tmp .. "/v1", "upgrade")
        assert.equal(0, code, old)
        assert.equal(200, (call(old, "POST", "ada")))

        -- release 2 starts beside it: its startup runs g2's up only
        local new
        code, new = start("new", 2, tmp .. "/v2", "upgrade")
        assert.equal(0, code, new)
        local cols = assert(db:exec([[SELECT string_agg(attname, ',' ORDER BY attname) AS c FROM pg_attribute
            WHERE attrelid = 'greeting'::regclass AND attnum > 0 AND NOT attisdropped]]))[1].c
        assert.equal("id,name,title", cols)
        assert.same({ "g1", "g2" }, (function()
            local r = assert(db:exec("SELECT revision FROM kronos_version ORDER BY revision"))
            return { r[1].revision, r[2].revision }
        end)())
        -- a release-2 instance behind the check{} gate starts too: only a finish is pending
        local gated
        code, gated = start("gated", 2, tmp .. "/v2", "check")
        assert.equal(0, code, gated)
        assert.matches("kronos: finish pending: g2", H.read_file(tmp .. "/gated/logs/error.log"), 1, true)

        -- both generations write and read the same rows meanwhile
        local status, body = call(old, "POST", "bob")
        assert.equal(200, status, body and body.error)
        status, body = call(new, "POST", "cy")
        assert.equal(200, status, body and body.error)
        status, body = call(old, "GET")
        assert.equal(200, status)
        assert.same({ "ada", "bob", "cy" }, body.who)
        status, body = call(gated, "GET")
        assert.equal(200, status)
        assert.same({ "ada", "bob", "cy" }, body.who)

        -- the last old instance stops; then the contraction
        stop(tmp .. "/old")
        local errfile = tmp .. "/finish.err"
        local fcode, fout = H.run(("{ %s %s/bin/kronos finish -d %s --dir %s 2>%s; }"):format(H.lua, H.root, q(url),
            q(tmp .. "/v2"), q(errfile)))
        assert.equal(0, fcode, fout .. (H.read_file(errfile) or ""))
        assert.matches("^finish    g2 title replaces name", fout)
        cols = assert(db:exec([[SELECT string_agg(attname, ',' ORDER BY attname) AS c FROM pg_attribute
            WHERE attrelid = 'greeting'::regclass AND attnum > 0 AND NOT attisdropped]]))[1].c
        assert.equal("id,title", cols)

        -- release 2 goes on serving
        status, body = call(new, "POST", "dee")
        assert.equal(200, status, body and body.error)
        status, body = call(gated, "GET")
        assert.equal(200, status)
        assert.same({ "ada", "bob", "cy", "dee" }, body.who)
        -- and old code could not come back: its files do not know g2, so its startup refuses
        local ocode, oout = start("old-again", 1, tmp .. "/v1", "upgrade")
        assert.equal(1, ocode)
        assert.matches("the database is at revision 'g2', which no migration file provides", oout, 1, true)
    end)
end)
