-- Shared by the specs: a fresh database per spec file, on the server the harness started.
local kronos = require "kronos"

local H = {}

H.base_url = assert(os.getenv("DATABASE_URL"), "run the specs through `make test`")
H.lua = os.getenv("KRONOS_LUA") or "lua5.4"
H.root = os.getenv("KRONOS_ROOT") or "."
H.luajit = rawget(_G, "jit") ~= nil

-- Calls f, which makes the call under test (not as a tail call: LuaJIT names no function called
-- that way), and checks that it raised a bad_argument error object; returns the object.
function H.bad_argument(f)
    local ok, err = pcall(f)
    local luassert = require "luassert"
    luassert.is_false(ok)
    luassert.is_true(kronos.is_error(err), tostring(err))
    luassert.are.equal("bad_argument", err.code, tostring(err))
    return err
end

-- The URL of another database on the same server.
function H.url_for(dbname)
    if H.base_url:match("^postgres%a*://") then
        local head, query = H.base_url:match("^(postgres%a*://[^/?]*)/?[^?]*(.*)$")
        return head .. "/" .. dbname .. query
    end
    return H.base_url .. " dbname=" .. dbname
end

local function admin()
    return assert(kronos.connect(H.base_url))
end

-- Creates an empty database named after the caller, returns its URL and name.
function H.fresh_db(tag)
    local name = ("kronos_%s_%s"):format(tag or "spec", kronos.uuid():sub(1, 8))
    local db = admin()
    assert(db:exec("CREATE DATABASE " .. db:escape_identifier(name)))
    db:close()
    return H.url_for(name), name
end

function H.drop_db(name)
    local db = admin()
    assert(db:exec("DROP DATABASE IF EXISTS " .. db:escape_identifier(name) .. " WITH (FORCE)"))
    db:close()
end

-- Runs a shell command, returns its exit code and its combined output.
function H.run(cmd)
    local p = io.popen(cmd .. " 2>&1; echo \"::$?\"")
    local out = p:read("a")
    p:close()
    local code = tonumber(out:match("::(%d+)%s*$"))
    return code, (out:gsub("::%d+%s*$", ""))
end

function H.trim(s)
    return (s:gsub("^%s+", ""):gsub("%s+$", ""))
end

-- A shell word.
function H.shell_quote(s)
    return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

-- Runs a shell command that must succeed; returns its trimmed output.
function H.sh(cmd)
    local code, out = H.run(cmd)
    assert(code == 0, ("command failed (%s): %s\n%s"):format(tostring(code), cmd, out))
    return H.trim(out)
end

-- The file's bytes, or nil when it cannot be read.
function H.read_file(path)
    local f = io.open(path, "rb")
    if not f then return nil end
    local s = f:read("a")
    f:close()
    return s
end

function H.write_file(path, s)
    local f = assert(io.open(path, "wb"))
    f:write(s)
    f:close()
end

-- A new private directory under /tmp (the caller removes it).
function H.tmpdir(tag)
    return H.sh("mktemp -d /tmp/kronos-" .. (tag or "spec") .. ".XXXXXX")
end

-- A fresh database with an open connection and a private directory, for a spec file's setup:
-- returns url, dbname, db, dir; H.drop_scratch(dbname, db, dir) in its teardown removes them.
function H.scratch(tag)
    local url, dbname = H.fresh_db(tag)
    return url, dbname, assert(kronos.connect(url)), H.tmpdir(tag)
end

function H.drop_scratch(dbname, db, dir)
    db:close()
    H.drop_db(dbname)
    H.sh("rm -rf " .. H.shell_quote(dir))
end

-- The kronos command: the program make builds from bin/launcher.c, for the spec's interpreter
-- (the build tools/run-tests.sh names), which runs bin/kronos as `H.lua bin/kronos` does.
H.command = ("%s/%s/bin/kronos"):format(H.root, os.getenv("KRONOS_BUILD") or (H.luajit and "build/luajit" or "build/lua5.4"))

-- Runs the kronos command (env: "VAR=value ..." put before it); returns the exit code, stdout
-- and stderr. The braces keep stderr apart from the 2>&1 that H.run adds.
function H.kronos(args, env)
    local errfile = os.tmpname()
    local code, out = H.run(("{ %s%s %s 2>%q; }"):format(env and env .. " " or "", H.shell_quote(H.command), args, errfile))
    local err = H.read_file(errfile)
    os.remove(errfile)
    return code, out, err
end

return H
