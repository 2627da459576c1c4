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
        local env = console.start(db, { input = input, output = output, prompt = "> ", dir = H.root .. "/migrations" })
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
        assert.not_matches("warning", out, 1, true) -- at head
        assert.matches('> user{ id = "' .. env.u.id .. '", email = "admin@example.org", first_name = "Ada"', out, 1, true)
        assert.matches('> "Ada"\n', out, 1, true)
        assert.matches(">> >> > 3\n", out, 1, true) -- the loop continued over lines, then the count
        assert.matches("> [1] user{ id = \"", out, 1, true)
        assert.matches("}\n%[2%] user{ id = \"[^\n]*}\n%(2 items%)\n", out)
        assert.matches("> nil\nemail must be at least 5 characters [invalid_email]\n", out, 1, true)
        assert.matches(">  one\n-----\n 1\n(1 row)\n", out, 1, true)
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

    it("help lists what is in scope and what the session defined", function()
        local out = session { "help", "answer = 42", "function twice(x) return 2 * x end", "help" }
        assert.matches("> In scope:\n  kronos   the module: [^\n]*connect", out)
        assert.matches("db:exec, ", out, 1, true)
        assert.matches("users:create, ", out, 1, true)
        assert.matches("Defined in this session: nothing yet\n", out, 1, true)
        assert.matches("Defined in this session: answer, twice\n", out, 1, true)
    end)

    it("prints query results and nested tables readably", function()
        local out = session {
            "db:exec('SELECT 1 AS id, $1::text AS name UNION ALL SELECT 22, NULL', 'ada')",
            "{ a = { 1, 2 }, b = 'x', [3] = true }",
            "{}",
        }
        assert.matches(">  id | name\n----+------\n 1  | ada\n 22 |\n(2 rows)\n", out, 1, true)
        assert.matches('> { [3] = true, a = { 1, 2 }, b = "x" }\n', out, 1, true)
        assert.matches("> {}\n", out, 1, true)
    end)

    it("warns at start when the database is not at head", function()
        local url, name = H.fresh_db("console")
        local c = assert(kronos.connect(url))
        local output = assert(io.tmpfile())
        console.start(c, { input = assert(io.open("/dev/null")), output = output, dir = H.root .. "/migrations" })
        output:seek("set", 0)
        local out = output:read("*a")
        c:close()
        H.drop_db(name)
        assert.matches("\nwarning: the database is not at head (1 pending: 4f1c2a9e7b30); `kronos upgrade` applies", out, 1, true)
    end)

    it("edits lines and keeps history at a terminal (lua-readline), through bin/kronos console", function()
        local home = H.tmpdir("console")
        local url = H.url_for(dbname)
        -- `script` gives the console a terminal; Ctrl-A moves to the start of the line, the up arrow
        -- recalls the previous line
        local cmd = ("printf '+ 2\\0011\\r\\033[A\\rexit\\r' | HOME=%s script -qec %s /dev/null"):format(
            H.shell_quote(home), H.shell_quote(("%s %s/bin/kronos console -d %s --dir %s"):format(
                H.lua, H.root, H.shell_quote(url), H.shell_quote(H.root .. "/migrations"))))
        local code, out = H.run(cmd)
        assert.equal(0, code, out)
        local results = {}
        for r in out:gsub("\27%[[%d;?]*%a", ""):gmatch("\n\r?(%d+)\r?\n") do results[#results + 1] = r end
        assert.same({ "3", "3" }, results)
        assert.equal("1+ 2\nexit\n", H.read_file(home .. "/.kronos_history"))
        os.execute("rm -rf " .. H.shell_quote(home))
    end)
end)
