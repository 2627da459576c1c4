-- The first minutes (tools/dev.sh, `make dev`, `make -s dev-env`): the main job prints the line
-- that points a shell at its database, and `eval "$(make -s dev-env)"` sets it, so that the CLI
-- reaches the development database afterwards. Run with DATABASE_URL set to a fresh database (the
-- ./.pgdata cluster is the same path with a URL of tools/pg.sh's making).
local H = require "spec.helper"

local q, trim = H.shell_quote, H.trim

describe("make dev and make dev-env", function()
    local url, dbname

    setup(function() url, dbname = H.fresh_db("dev") end)
    teardown(function() if dbname then H.drop_db(dbname) end end)

    local function in_root(cmd, env)
        return H.run(("cd %s && env -u DATABASE_URL %s %s"):format(q(H.root), env or "", cmd))
    end

    it("dev.sh start migrates, shows the state, and ends with the export line", function()
        local code, out = in_root("sh tools/dev.sh start", "DATABASE_URL=" .. q(url))
        assert.equals(0, code, out)
        assert.matches("4f1c2a9e7b30", out, 1, true)
        local last = trim(out):match("[^\n]*$")
        assert.equals("export DATABASE_URL='" .. url .. "'", last)
        assert.matches('eval "$(make -s dev-env)"', out, 1, true)
    end)

    it("eval \"$(make -s dev-env)\" sets DATABASE_URL for the CLI", function()
        local code, out = in_root("make -s dev-env", "DATABASE_URL=" .. q(url))
        assert.equals(0, code, out)
        assert.equals("export DATABASE_URL='" .. url .. "'\n", out) -- that line only: eval-able
        -- a shell without DATABASE_URL: after the eval, kronos reaches the development database
        code, out = in_root(("sh -c %s"):format(q(('eval "$(DATABASE_URL=%s make -s dev-env)"; %s bin/kronos current')
            :format(q(url), H.lua))))
        assert.equals(0, code, out)
        assert.matches("^4f1c2a9e7b30", trim(out))
    end)

    it("the export line quotes what the shell would expand", function()
        local odd = "postgresql://u@h/db?application_name=it's $HOME `x`"
        local code, out = in_root(("sh -c %s"):format(q('eval "$(make -s dev-env)"; printf %s "$DATABASE_URL"')),
            "DATABASE_URL=" .. q(odd))
        assert.equals(0, code, out)
        assert.equals(odd, out)
    end)
end)
