-- Shared by the specs: a fresh database per spec file, on the server the harness started.
local kronos = require "kronos"

local H = {}

H.base_url = assert(os.getenv("DATABASE_URL"), "run the specs through `make test`")
H.lua = os.getenv("KRONOS_LUA") or "lua5.4"
H.root = os.getenv("KRONOS_ROOT") or "."
H.luajit = rawget(_G, "jit") ~= nil

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

return H
