-- Installing with LuaRocks (README, "Installing"): each install command of the README, exactly as
-- written there, runs in a fresh `git clone` of this checkout (its committed HEAD) into a fresh
-- tree; the installed tree is then used from a directory outside the checkout, with a clean
-- environment (no LUA_PATH/LUA_CPATH: only the tree and the system's defaults): the kronos
-- command, the shipped users migration against the real server, a Lua 5.4 and a LuaJIT script.
-- Each command builds once, in setup.
local H = require "spec.helper"
local kronos = require "kronos"

local q, trim, slurp = H.shell_quote, H.trim, H.read_file

local function readme_section(name)
    local text = assert(slurp(H.root .. "/README.md"))
    return assert(text:match("<!%-%- section:" .. name .. " %-%->(.-)<!%-%- /section:" .. name .. " %-%->"),
        "README has a section " .. name)
end

-- The README's install commands: the lines of its sh blocks that run `luarocks ... make`.
local function readme_commands()
    local found = {}
    for block in readme_section("install"):gmatch("```sh\n(.-)```") do
        for line in block:gmatch("[^\n]+") do
            if line:match("^[^#]*luarocks .* make ") then found[#found + 1] = trim(line) end
        end
    end
    return found
end

-- A clean environment: PATH and HOME only (no Lua paths, no sanitizer preloads), plus `extra`.
local function clean(extra)
    local env = { "env -i", "PATH=" .. q(os.getenv("PATH")), "HOME=" .. q(os.getenv("HOME") or "/root") }
    for k, v in pairs(extra or {}) do env[#env + 1] = k .. "=" .. q(v) end
    return table.concat(env, " ") .. " "
end

-- Runs each job's `cmd` (with DIR replaced by its `tree`) in a fresh clone of the checkout at its
-- `src`, all at once (the builds take most of this file's time); sets each job's code and out.
local function install(jobs)
    local script = {}
    for _, job in ipairs(jobs) do
        script[#script + 1] = ("(git clone -q %s %s && cd %s && %s%s) > %s 2>&1; echo $? > %s &"):format(
            q(H.root), q(job.src), q(job.src), clean(), (job.cmd:gsub("DIR", q(job.tree))),
            q(job.src .. ".out"), q(job.src .. ".rc"))
    end
    script[#script + 1] = "wait"
    H.sh(table.concat(script, " "))
    for _, job in ipairs(jobs) do
        job.code = tonumber(trim(slurp(job.src .. ".rc") or ""))
        job.out = slurp(job.src .. ".out") or ""
    end
end

local function exists(path)
    return H.run("test -e " .. q(path)) == 0
end

describe("installing with LuaRocks", function()
    local tmp, outside
    local commands = readme_commands()
    local builds = {} -- name -> {cmd, src, tree, code, out}
    local url, dbname

    setup(function()
        tmp = H.tmpdir("rock")
        outside = tmp .. "/elsewhere"
        H.sh("mkdir -p " .. q(outside))
        local jobs = {}
        for _, cmd in ipairs(commands) do
            local name = cmd:find("luarocks-luajit", 1, true) and "luajit" or cmd:find("--lua-version 5.4", 1, true) and "lua54"
            if name then
                builds[name] = { cmd = cmd, src = tmp .. "/src-" .. name, tree = tmp .. "/tree-" .. name }
                jobs[#jobs + 1] = builds[name]
            end
        end
        -- what a Debian user gets from plain `luarocks make` (PUC Lua 5.1): a build that must fail
        builds.lua51 = { cmd = "luarocks make --deps-mode none --tree DIR kronos-scm-1.rockspec",
                         src = tmp .. "/src-lua51", tree = tmp .. "/tree-lua51" }
        jobs[#jobs + 1] = builds.lua51
        install(jobs)
        url, dbname = H.fresh_db("rock")
    end)

    teardown(function()
        if dbname then H.drop_db(dbname) end
        if tmp then H.run("rm -rf " .. q(tmp)) end
    end)

    it("the README gives one command for Lua 5.4 and one for LuaJIT, and each installs", function()
        assert.equals(2, #commands)
        for _, name in ipairs { "lua54", "luajit" } do
            local b = assert(builds[name], "a README command for " .. name)
            assert.equals(0, b.code, b.cmd .. "\n" .. b.out)
            -- offline: every dependency was found (the Debian packages, declared provided)
            assert.not_matches("Missing dependencies", b.out, 1, true)
        end
    end)

    -- The installed `kronos` command, run from outside the checkout.
    local function kronos_cmd(name, args, env)
        return H.run(("cd %s && %s%s %s"):format(q(outside), clean(env), q(builds[name].tree .. "/bin/kronos"), args))
    end

    -- A script run by `interpreter` from outside the checkout, with the tree first on Lua's paths
    -- (`;;`: then the system's defaults, for lua-cjson). It prints the module's version, where
    -- kronos and kronos.core were found, and how many rows the user it creates has (1).
    local function script(name, interpreter, luaver)
        local tree = builds[name].tree
        local probe = [[
            local kronos = require "kronos"
            local db = assert(kronos.connect(os.getenv("DATABASE_URL")))
            local u = assert(kronos.users(db):create { email = "script-" .. kronos.uuid() .. "@example.org" })
            local n = db:exec("SELECT count(*) AS n FROM users WHERE id = $1", u.id)[1].n
            print(kronos._VERSION, package.searchpath("kronos", package.path),
                  package.searchpath("kronos.core", package.cpath), n)
            db:close()]]
        return H.run(("cd %s && %s%s -e %s"):format(q(outside), clean {
            DATABASE_URL = url,
            LUA_PATH = ("%s/share/lua/%s/?.lua;%s/share/lua/%s/?/init.lua;;"):format(tree, luaver, tree, luaver),
            LUA_CPATH = ("%s/lib/lua/%s/?.so;;"):format(tree, luaver),
        }, interpreter, q(probe)))
    end

    it("kronos --version prints the module's version, from either tree", function()
        for _, name in ipairs { "lua54", "luajit" } do
            -- the program itself, not a wrapper script that starts an interpreter
            assert.equals("\127ELF", slurp(builds[name].tree .. "/bin/kronos"):sub(1, 4))
            local code, out = kronos_cmd(name, "--version")
            assert.equals(0, code, out)
            assert.equals(kronos._VERSION, trim(out):match("%d+%.%d+%.%d+[%w.-]*"))
        end
        assert.matches("^%d+%.%d+%.%d+$", kronos._VERSION)
    end)

    it("kronos --module kronos.migrations upgrade creates the users table with the directory's checksum", function()
        local code, out = kronos_cmd("lua54", "--module kronos.migrations upgrade", { DATABASE_URL = url })
        assert.equals(0, code, out)
        code, out = kronos_cmd("luajit", "--module kronos.migrations current", { DATABASE_URL = url })
        assert.equals(0, code, out)
        assert.equals("4f1c2a9e7b30 (head)", trim(out))
        -- a checkout's migrations directory sees the same revision with the same checksum
        local db = assert(kronos.connect(url))
        finally(function() db:close() end)
        local ok, why = require("kronos.migrate").check { db = db, dir = H.root .. "/migrations" }
        assert.is_true(ok, why and table.concat(why.changed, ","))
        assert.equals(1, db:exec("SELECT count(*) AS n FROM kronos_version")[1].n)
    end)

    it("a Lua 5.4 script and a LuaJIT script require kronos from their tree and query", function()
        for _, run in ipairs { { "lua54", "lua5.4", "5.4" }, { "luajit", "luajit", "5.1" } } do
            local tree = builds[run[1]].tree
            local code, out = script(run[1], run[2], run[3])
            assert.equals(0, code, out)
            local version, lua_file, so_file, n = out:match("^(%S+)\t(%S+)\t(%S+)\t(%d+)")
            assert.equals(kronos._VERSION, version)
            assert.equals(tree .. "/share/lua/" .. run[3] .. "/kronos/init.lua", lua_file)
            assert.equals(tree .. "/lib/lua/" .. run[3] .. "/kronos/core.so", so_file)
            assert.equals("1", n)
        end
    end)

    -- OpenResty's way: nginx's LuaJIT loads kronos from the LuaJIT tree (lua_package_path/cpath as
    -- the README says), migrates with the shipped module in init_by_lua, and a worker queries.
    it("nginx with the Lua module loads kronos from the LuaJIT tree and migrates with kronos.migrations", function()
        local tree = builds.luajit.tree
        local ngx_url, ngx_db = H.fresh_db("rockngx")
        local prefix = tmp .. "/nginx"
        finally(function()
            H.run(("sh %s/tools/nginx.sh stop %s"):format(q(H.root), q(prefix)))
            H.drop_db(ngx_db)
        end)
        -- tools/nginx.sh wants the checkout's LuaJIT build (it copies it; this conf ignores the copy)
        H.sh(("make -s -C %s LUA=luajit"):format(q(H.root)))
        -- as root the workers run as nobody: the tree must be readable by it
        H.sh(("chmod 755 %s && chmod -R a+rX %s"):format(q(tmp), q(tree)))
        local conf = tmp .. "/nginx-tree.conf"
        H.write_file(conf, ([[
load_module /usr/lib/nginx/modules/ndk_http_module.so;
load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;
worker_processes 1;
pid logs/nginx.pid;
user nobody nogroup;
env DATABASE_URL;
events { worker_connections 16; }
http {
    access_log off;
    client_body_temp_path tmp/body;
    proxy_temp_path tmp/proxy;
    fastcgi_temp_path tmp/fastcgi;
    uwsgi_temp_path tmp/uwsgi;
    scgi_temp_path tmp/scgi;
    lua_package_path "TREE/share/lua/5.1/?.lua;TREE/share/lua/5.1/?/init.lua;;";
    lua_package_cpath "TREE/lib/lua/5.1/?.so;;";
    init_by_lua_block {
        local ok, applied = pcall(require("kronos.migrate").upgrade,
            { url = os.getenv("DATABASE_URL"), modules = { "kronos.migrations" } })
        if not ok then error(tostring(applied), 0) end
    }
    server {
        listen 127.0.0.1:8080;
        location / {
            content_by_lua_block {
                local kronos = require "kronos"
                local db = assert(kronos.connect(os.getenv("DATABASE_URL")))
                local rev = db:exec("SELECT revision FROM kronos_version")[1].revision
                db:close()
                ngx.say(kronos._VERSION, " ", package.searchpath("kronos.core", package.cpath), " ", rev)
            }
        }
    }
}
]]):gsub("TREE", tree))
        local code, base = H.run(("env DATABASE_URL=%s sh %s/tools/nginx.sh start %s %s"):format(
            q(ngx_url), q(H.root), q(prefix), q(conf)))
        assert.equals(0, code, base)
        local out = H.sh(("env -u LD_PRELOAD curl -sS --max-time 10 %s/"):format(q(trim(base))))
        assert.equals(("%s %s/lib/lua/5.1/kronos/core.so 4f1c2a9e7b30"):format(kronos._VERSION, tree), out)
    end)

    it("a build for PUC Lua 5.1 (plain `luarocks make` on Debian) stops at build time and installs nothing", function()
        local tree, code, out = builds.lua51.tree, builds.lua51.code, builds.lua51.out
        assert.not_equals(0, code)
        assert.matches("kronos builds for Lua 5.4 or LuaJIT 2.1 only", out, 1, true)
        assert.is_false(exists(tree .. "/lib/lua/5.1/kronos"))
        assert.is_false(exists(tree .. "/share/lua/5.1/kronos"))
        assert.is_false(exists(tree .. "/bin/kronos"))
    end)
end)

describe("kronos-scm-1.rockspec", function()
    local text = assert(slurp(H.root .. "/kronos-scm-1.rockspec"))
    local spec = {}
    local chunk = assert(load(text, "=rockspec", "t", spec))
    if setfenv then setfenv(chunk, spec) end -- LuaJIT: load ignores env
    chunk()

    it("carries no path of a developer's machine", function()
        assert.not_matches("file:///", text, 1, true)
        for _, dir in ipairs { "/work/", "/home/", "/root/", "/tmp/" } do assert.not_matches(dir, text, 1, true) end
    end)

    it("declares exactly the rocks the installed Lua code requires, and the configs provide them offline", function()
        local rock_of = { argparse = "argparse", cjson = "lua-cjson", ["cjson.safe"] = "lua-cjson" }
        local used = { lua = true }
        local declared = {}
        for _, dep in ipairs(spec.dependencies) do declared[dep:match("^[%w%-_.]+")] = true end
        local code, files = H.run("cd " .. q(H.root) .. " && find lua bin -type f")
        assert.equals(0, code, files)
        for file in files:gmatch("[^\n]+") do
            -- a plain require (a pcall(require, ...) is optional and needs no declaration)
            for name in assert(slurp(H.root .. "/" .. file)):gmatch("require%s*%(?%s*[\"']([%w_.]+)[\"']") do
                if not name:match("^kronos") then
                    local rock = rock_of[name]
                    assert(rock, file .. " requires " .. name .. ": add it to the rockspec's dependencies and rock_of here")
                    assert(declared[rock], "kronos-scm-1.rockspec must declare " .. rock .. " (" .. file .. ")")
                    used[rock] = true
                end
            end
        end
        -- and nothing the code no longer requires
        for rock in pairs(declared) do
            assert(used[rock], "kronos-scm-1.rockspec declares " .. rock .. ", which nothing in lua/ or bin/ requires")
        end
        -- each LuaRocks configuration of the README declares every dependency but lua provided
        for _, config in ipairs { "tools/luarocks-lua5.4.lua", "tools/luarocks-luajit.lua" } do
            local env = {}
            local c = assert(loadfile(H.root .. "/" .. config, "t", env))
            if setfenv then setfenv(c, env) end
            c()
            for rock in pairs(declared) do
                if rock ~= "lua" then assert(env.rocks_provided[rock], config .. " provides " .. rock) end
            end
        end
    end)

    it("builds through the Makefile, so every src/*.c and lua/**/*.lua goes in without a list", function()
        assert.equals("make", spec.build.type)
        assert.is_nil(spec.build.modules)
        -- the kronos command is the program the Makefile builds (bin/launcher.c), installed by make install
        assert.is_nil(spec.build.install)
        assert.equals("$(BINDIR)", spec.build.install_variables.INST_BINDIR)
        assert.equals("$(LUA)", spec.build.build_variables.LUA_BIN)
    end)

    it("plain make never installs packages; make deps, make test and make dev do", function()
        local function dry(target)
            local code, out = H.run(("make -n -B -C %s BUILD=/nonexistent/kronos-build %s"):format(q(H.root), target))
            assert.equals(0, code, out)
            return out
        end
        assert.not_matches("deps.sh", dry("all"), 1, true)
        assert.not_matches("deps.sh", dry(""), 1, true)
        for _, target in ipairs { "deps", "test", "dev" } do assert.matches("tools/deps.sh base", dry(target), 1, true) end
    end)
end)
