-- kronos.console (lua/kronos/console.lua): the admin REPL, driven through files for input/output.
local kronos = require "kronos"
local console = require "kronos.console"
local H = require "spec.helper"

describe("kronos.console", function()
    local dbname, db

    setup(function()
        local url
        url, dbname = H.fresh_db("console")
        db = assert(kronos.connect(url))
        require("kronos.migrate").upgrade { db = db, dir = H.root .. "/migrations" }
    end)

    teardown(function()
        db:close()
        H.drop_db(dbname)
    end)

    local function session(lines)
        local input = assert(io.tmpfile())
        input:write(table.concat(lines, "\n"), "\n")
        input:seek("set", 0)
        local output = assert(io.tmpfile())
        local env = console.start(db, { input = input, output = output, prompt = "> " })
        output:seek("set", 0)
        local text = output:read("*a")
        input:close()
        output:close()
        return text, env
    end

    it("runs statements with kronos, db and users in scope and prints users readably", function()
        local out, env = session {
            'u = users:create{ email = "Admin@Example.org", first_name = "Ada" }',
            "u",
            'users:find_by_email("admin@example.org").first_name',
            "for i = 1, 2 do",
            '  users:create{ email = "more" .. i .. "@example.org" }',
            "end",
            "users:count()",
            "users:list{ limit = 2 }",
            'users:create{ email = "bad" }',
            "db:exec('SELECT 1 AS one')",
            "kronos.is_uuid(u.id)",
            "error('boom')",
            "exit",
            "users:count()",
        }
        assert.matches("kronos, db, users are ready", out, 1, true)
        assert.matches('> user{ id = "' .. env.u.id .. '", email = "admin@example.org", first_name = "Ada"', out, 1, true)
        assert.matches('> "Ada"\n', out, 1, true)
        assert.matches(">> >> > 3\n", out, 1, true) -- the loop continued over lines, then the count
        assert.matches("{ -- 2 items\n  [1] user{", out, 1, true)
        assert.matches("> nil\nemail must be at least 5 characters [invalid_email]\n", out, 1, true)
        assert.matches("one = 1", out, 1, true)
        assert.matches("> true\n", out, 1, true)
        assert.matches("\n> [^\n]*boom\n", out)
        assert.is_nil(out:find("> 3\n.*> 3\n")) -- nothing ran after exit
        assert.are.equal(3, kronos.users(db):count())
    end)

    it("reports syntax errors and ends at the end of input", function()
        local out = session { "x = = 1", "1 + 1" }
        assert.matches("console:1:", out, 1, true)
        assert.matches("> 2\n", out, 1, true)
    end)
end)
