-- Error objects (src/error.c): real violations from the server, and kronos.error from Lua.
local kronos = require "kronos"
local H = require "spec.helper"

describe("kronos errors", function()
    local dbname, conn

    setup(function()
        local url
        url, dbname = H.fresh_db("errors")
        conn = assert(kronos.connect(url))
        assert(conn:script([[
            CREATE TABLE account (
                id int PRIMARY KEY,
                email text NOT NULL CONSTRAINT account_email_key UNIQUE,
                age int CONSTRAINT account_age_check CHECK (age >= 0)
            );
            INSERT INTO account VALUES (1, 'a@example.org', 30);
        ]]))
    end)

    teardown(function()
        conn:close()
        H.drop_db(dbname)
    end)

    local function fails(sql, ...)
        local r, err = conn:exec(sql, ...)
        assert.is_nil(r)
        assert.is_true(kronos.is_error(err))
        local line = tostring(err)
        assert.is_nil(line:find("\n"), line)
        return err, line
    end

    it("unique violation", function()
        local err, line = fails("INSERT INTO account (id, email) VALUES ($1, $2)", 2, "a@example.org")
        assert.are.equal("unique_violation", err.code)
        assert.are.equal("23505", err.sqlstate)
        assert.are.equal("account_email_key", err.constraint)
        assert.are.equal("account", err.table)
        assert.are.equal("public", err.schema)
        assert.are.equal("ERROR", err.severity)
        assert.are.equal("Key (email)=(a@example.org) already exists.", err.detail)
        assert.are.equal('duplicate key value violates unique constraint "account_email_key"', err.message)
        assert.are.equal('duplicate key value violates unique constraint "account_email_key" [unique_violation 23505]', line)
    end)

    it("check violation", function()
        local err = fails("INSERT INTO account VALUES ($1, $2, $3)", 3, "b@example.org", -1)
        assert.are.equal("check_violation", err.code)
        assert.are.equal("23514", err.sqlstate)
        assert.are.equal("account_age_check", err.constraint)
        assert.are.equal("account", err.table)
        assert.matches("^Failing row contains", err.detail)
    end)

    it("not-null violation names the column", function()
        local err = fails("INSERT INTO account (id) VALUES ($1)", 4)
        assert.are.equal("not_null_violation", err.code)
        assert.are.equal("23502", err.sqlstate)
        assert.are.equal("email", err.column)
        assert.are.equal("account", err.table)
    end)

    it("syntax error, with its position", function()
        local err, line = fails("SELEC 1")
        assert.are.equal("syntax_error", err.code)
        assert.are.equal("42601", err.sqlstate)
        assert.are.equal("1", err.position)
        assert.are.equal('syntax error at or near "SELEC" [syntax_error 42601]', line)
    end)

    it("undefined table", function()
        local err = fails("SELECT * FROM no_such_table")
        assert.are.equal("undefined_table", err.code)
        assert.are.equal("42P01", err.sqlstate)
        assert.are.equal('relation "no_such_table" does not exist', err.message)
    end)

    it("a hint when the server gives one", function()
        local err = fails("SELECT nosuchfunc(1)")
        assert.are.equal("undefined_function", err.code)
        assert.is_string(err.hint)
    end)

    it("an error raised by SQL code keeps its own sqlstate and a one-line message", function()
        local err, line = fails([[DO $$ BEGIN RAISE EXCEPTION E'two\nlines' USING ERRCODE = 'P0001',
            DETAIL = 'the detail', HINT = 'the hint'; END $$]])
        assert.are.equal("raise_exception", err.code)
        assert.are.equal("P0001", err.sqlstate)
        assert.are.equal("the detail", err.detail)
        assert.are.equal("the hint", err.hint)
        assert.are.equal("two lines [raise_exception P0001]", line)
        err = fails("DO $$ BEGIN RAISE EXCEPTION 'custom' USING ERRCODE = 'KR001'; END $$")
        assert.are.equal("KR001", err.code)
        assert.are.equal("custom [KR001]", tostring(err))
    end)

    it("the connection stays usable after each error", function()
        fails("SELECT 1/0")
        assert.are.equal(1, conn:exec("SELECT count(*) AS n FROM account")[1].n)
    end)

    it("kronos.error builds the same kind of object from Lua", function()
        local e = kronos.error("invalid_input", "email is not valid", { column = "email" })
        assert.is_true(kronos.is_error(e))
        assert.are.same({ code = "invalid_input", message = "email is not valid", column = "email" },
            { code = e.code, message = e.message, column = e.column })
        assert.are.equal("email is not valid [invalid_input]", tostring(e))
        assert.is_false(kronos.is_error({ code = "x", message = "y" }))
        assert.is_false(kronos.is_error("x"))
        assert.is_false(kronos.is_error(nil))
        assert.has_error(function() kronos.error(nil, "m") end)
    end)

    it("a migration command's bad option is a bad_argument error naming the command", function()
        local migrate = require "kronos.migrate"
        local dir = H.root .. "/spec/fixtures/migrate/linear"
        local function raised(f, opts)
            opts.dir, opts.sql = dir, true
            local ok, err = pcall(f, opts)
            assert.is_false(ok)
            assert.is_true(kronos.is_error(err), tostring(err))
            assert.are.equal("bad_argument", err.code)
            return tostring(err), err
        end
        local line, err = raised(migrate.upgrade, { lock_timeout = true })
        assert.are.equal("bad argument #1 to 'upgrade' (opts.lock_timeout: milliseconds or a duration string "
            .. "expected, got boolean) [bad_argument]", line)
        assert.are.equal("upgrade", err.func)
        assert.are.equal("bad argument #1 to 'upgrade' (opts.statement_timeout: must be from 0 to 2147483647 ms) "
            .. "[bad_argument]", raised(migrate.upgrade, { statement_timeout = -1 }))
        assert.are.equal("bad argument #1 to 'upgrade' (opts.transaction_per_migration: boolean expected, got "
            .. "number) [bad_argument]", raised(migrate.upgrade, { transaction_per_migration = 1 }))
        assert.are.equal("bad argument #1 to 'downgrade' (opts.allow_changed: boolean expected, got string) "
            .. "[bad_argument]", raised(migrate.downgrade, { target = "head:base", allow_changed = "yes" }))
        assert.are.equal("bad argument #1 to 'stamp' (opts.purge: boolean expected, got table) [bad_argument]",
            raised(migrate.stamp, { target = "aaa111", purge = {} }))
        assert.are.equal("bad argument #1 to 'upgrade' (opts.version_table: string expected, got number) [bad_argument]",
            raised(migrate.upgrade, { version_table = 5 }))
        assert.are.equal("bad argument #1 to 'upgrade' (opts.version_table: must be 1 to 63 bytes long, got 64) "
            .. "[bad_argument]", raised(migrate.upgrade, { version_table = ("v"):rep(64) }))
        assert.are.equal("bad argument #1 to 'upgrade' (opts.on_event: function expected, got string) [bad_argument]",
            raised(migrate.upgrade, { on_event = "print" }))
        assert.are.equal("bad argument #1 to 'downgrade' (opts.log: function expected, got boolean) [bad_argument]",
            raised(migrate.downgrade, { target = "head:base", log = true }))
        assert.are.equal("bad argument #1 to 'upgrade' (opts.x: table expected, got string) [bad_argument]",
            raised(migrate.upgrade, { x = "k=v" }))
        assert.are.equal("bad argument #1 to 'upgrade' (opts.sql: boolean expected, got string) [bad_argument]",
            raised(function(o) o.sql = "yes" return migrate.upgrade(o) end, {}))
        -- the options the Lua layer reads, worded the same way
        assert.are.equal("bad argument #1 to 'upgrade' (opts.dir: a string or a list of strings expected) [bad_argument]",
            raised(function(o) o.dir = 5 return migrate.upgrade(o) end, {}))
        assert.are.equal("bad argument #1 to 'upgrade' (opts.retries: a non-negative integer expected) [bad_argument]",
            raised(migrate.upgrade, { retries = -1 }))
        local ok1, e1 = pcall(migrate.heads, { dir = { "" } })
        assert.is_false(ok1)
        assert.are.equal("bad argument #1 to 'heads' (opts.dir[1]: a non-empty string expected) [bad_argument]", tostring(e1))
        assert.are.equal("heads", e1.func)
        local ok2, e2 = pcall(migrate.revision, { dir = dir })
        assert.is_false(ok2)
        assert.are.equal("bad argument #1 to 'revision' (opts.message: a non-empty string expected) [bad_argument]",
            tostring(e2))
        -- the name does not outlive the command: a later misuse Lua can name keeps its own name
        local ok, e = pcall(kronos.error, 1, "m")
        assert.is_false(ok)
        assert.matches("^bad argument #1 to '[^']*' %(code %(string%) expected, got number%)", tostring(e))
        assert.is_nil(tostring(e):find("stamp", 1, true))
        -- good options still run
        assert.matches("SET LOCAL lock_timeout = '5s';", migrate.upgrade { dir = dir, sql = true, lock_timeout = "5s" }, 1, true)
    end)

    it("the DDL check's recording op raises the same error objects as the real one", function()
        local migrate = require "kronos.migrate"
        local dir = H.tmpdir("errlint")
        local function lint_text(body)
            H.write_file(dir .. "/001_x.lua", ('return { revision = "x1", up = function(op) %s end }'):format(body))
            local found = migrate.lint { dir = dir }
            for _, f in ipairs(found) do
                if f.level == "error" or f.rule == "error" then return f.text end
            end
            return found[1] and found[1].text
        end
        local nohelper = lint_text("op.no_such_helper()")
        local numkey = lint_text("local _ = op[1]")
        H.sh("rm -rf " .. H.shell_quote(dir))
        assert.matches("op.no_such_helper: no such DDL helper [bad_migration]", nohelper, 1, true)
        assert.matches("op has only named fields, not number keys [bad_migration]", numkey, 1, true)
    end)

    it("the module's other functions raise bad_argument objects too, never plain strings", function()
        local core = require "kronos.core"
        local function raised(f, ...)
            local n, args, unpack = select("#", ...), { ... }, table.unpack or unpack
            return tostring(H.bad_argument(function() local r = f(unpack(args, 1, n)) return r end))
        end
        assert.matches("(string expected, got table)", raised(core.migrate.sha256, {}), 1, true)
        assert.matches("(string expected, got no value)", raised(core.migrate.scan), 1, true)
        assert.matches("(the directory contains a NUL byte)", raised(core.migrate.scan, "a\0b"), 1, true)
        assert.matches("(string expected, got boolean)", raised(core.migrate.lock_key, true), 1, true)
        assert.matches("(table expected, got number)", raised(core.catalog.compare, 1, {}), 1, true)
        assert.matches("(table expected, got string)", raised(core.lint.phase, "x", "up", {}), 1, true)
        assert.matches("(string expected, got boolean)", raised(core.migrate.run, true, {}, {}), 1, true)
        assert.matches("(table expected, got number)", raised(core.migrate.run, "upgrade", 5, {}), 1, true)
        assert.matches("(table expected, got nil)", raised(core.migrate.status, {}, nil), 1, true)
        -- a pipeline's exec on something else
        local p_exec
        assert(conn:pipeline(function(p) p_exec = p.exec; p:exec("SELECT 1") end))
        assert.matches("(kronos pipeline expected)", raised(p_exec, 42), 1, true)
        assert.matches("(kronos pipeline expected)", raised(p_exec, {}), 1, true)
        assert.matches("(string expected, got nil)", raised(core.one_line, nil), 1, true)
        -- the one escaping, as tostring(err) applies it, for the CLI's lines
        assert.are.equal("a\\nb\\027[31mc\\td\\r", core.one_line("a\nb\27[31mc\td\r"))
        assert.are.equal(tostring(kronos.error("x", "a\nb\27[31mc\td\r")), core.one_line("a\nb\27[31mc\td\r") .. " [x]")
        -- still working for good arguments
        assert.are.equal(64, #core.migrate.sha256("a\0b"))
    end)

    it("a prepared statement's methods on anything else raise a bad_argument object", function()
        local st = assert(conn:prepare("SELECT 1 AS one"))
        local close, exec = st.close, st.exec
        local ok, err = pcall(function() local r = close(42) return r end) -- not a tail call: LuaJIT cannot name those
        assert.is_false(ok)
        assert.is_true(kronos.is_error(err))
        assert.are.equal("bad argument #1 to 'close' (kronos statement expected, got number) [bad_argument]",
            tostring(err))
        ok, err = pcall(function() local r = exec(conn) return r end)
        assert.is_false(ok)
        assert.are.equal("bad argument #1 to 'exec' (kronos statement expected, got userdata) [bad_argument]",
            tostring(err))
        assert.is_true(st:close())
        assert.is_true(st:close()) -- a closed statement is still a statement
    end)
end)
