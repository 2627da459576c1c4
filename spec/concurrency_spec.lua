-- Several kronos processes at once on one database: `kronos init` racing to create it, and
-- `kronos upgrade` on a chain with a non-transactional step (CREATE INDEX CONCURRENTLY), as
-- several OpenResty instances starting together do. Real bin/kronos processes, a real server.
local kronos = require "kronos"
local H = require "spec.helper"

local USERS = H.root .. "/migrations"

-- Starts `bin/kronos args` in the background; returns a handle whose :finish() -> code, output.
local function spawn(args, env)
    local cmd = ("%s%s %s/bin/kronos %s 2>&1; echo \"::$?\""):format(env and env .. " " or "", H.lua,
        H.shell_quote(H.root), args)
    local p = assert(io.popen(cmd))
    return {
        finish = function()
            local out = p:read("a")
            p:close()
            return tonumber(out:match("::(%d+)%s*$")), (out:gsub("::%d+%s*$", ""))
        end,
    }
end

describe("concurrency", function()
    it("eight `kronos init` at once on a database that does not exist: all succeed, one creates it", function()
        local name = "kronos_conc_init_" .. kronos.uuid():sub(1, 8)
        local url = H.url_for(name)
        local procs = {}
        for i = 1, 8 do
            procs[i] = spawn(("init -d %s --dir %s"):format(H.shell_quote(url), H.shell_quote(USERS)))
        end
        local created, applied = 0, 0
        for i = 1, 8 do
            local code, out = procs[i].finish()
            assert.are.equal(0, code, out)
            assert.matches("at 4f1c2a9e7b30\n", out, 1, true)
            if out:find("created database " .. name, 1, true) then created = created + 1 end
            if out:find("upgrade   4f1c2a9e7b30", 1, true) then applied = applied + 1 end
        end
        assert.are.equal(1, created)
        assert.are.equal(1, applied)
        local db = assert(kronos.connect(url))
        assert.are.equal(1, assert(db:exec("SELECT count(*) AS n FROM kronos_version"))[1].n)
        db:close()
        H.drop_db(name)
    end)
end)
