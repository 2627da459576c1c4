-- The kronos command (the program make builds from bin/launcher.c, H.command; bin/kronos is the
-- same command as a Lua script): the verbs, their output, exit codes (0 ok, 1 failure, 2 usage,
-- check 3/4/5) and one-line errors, run as real processes against a real server.
local H = require "spec.helper"
local kronos = require "kronos"

local FIX = H.root .. "/spec/fixtures/migrate/"
local USERS = H.root .. "/migrations"
local q = H.shell_quote

local kronos_cmd = H.kronos

-- A directory of migration files written by the spec: {name = source, ...}.
local function migrations(files)
    local dir = H.tmpdir("cli")
    for name, src in pairs(files) do H.write_file(dir .. "/" .. name, src) end
    return dir
end

local function mig(rev, down, message, up, extra)
    return ("return { revision = %q, down_revision = %s, message = %q, up = function(op) %s end, %s }\n"):format(
        rev, down and ("%q"):format(down) or "nil", message, up or "op.execute('SELECT 1')",
        extra or "down = function(op) op.execute('SELECT 1') end")
end

describe("the kronos command", function()
    local url, dbname
    setup(function() url, dbname = H.fresh_db("cli") end)
    teardown(function() H.drop_db(dbname) end)

    -- against this spec's database
    local function k(args, env) return kronos_cmd(("-d %s %s"):format(q(url), args), env) end
    local function fresh()
        local u, name = H.fresh_db("cli")
        return function(args, env) return kronos_cmd(("-d %s %s"):format(q(u), args), env) end, u, name
    end

    it("upgrades with a line per step and a summary; current, history, check, downgrade", function()
        local code, out = kronos_cmd(("upgrade -d %q --dir %q"):format(url, USERS))
        assert.equal(0, code, out)
        assert.matches("^upgrade base %-> 4f1c2a9e7b30, create users table\n"
            .. "now at 4f1c2a9e7b30 %(head%); 1 applied in %d+ ms\n$", out)
        code, out = kronos_cmd(("upgrade -d %q --dir %q"):format(url, USERS))
        assert.equal(0, code, out)
        assert.equal("now at 4f1c2a9e7b30 (head); nothing to upgrade\n", out)
        code, out = kronos_cmd(("current -d %q --dir %q"):format(url, USERS))
        assert.equal(0, code)
        assert.equal("4f1c2a9e7b30 (head)\n", out)
        code, out = kronos_cmd(("current --verbose -d %q --dir %q"):format(url, USERS))
        assert.equal(0, code)
        assert.matches("^4f1c2a9e7b30 %(head%)\n    create users table; "
            .. ".*4f1c2a9e7b30_create_users_table%.lua; applied %d%d%d%d%-", out)
        code, out = kronos_cmd(("history --dir %q -d %q"):format(USERS, url))
        assert.equal(0, code)
        assert.matches("^<base> %-> 4f1c2a9e7b30 %(head, current%), create users table %[applied %d%d%d%d%-", out)
        code, out = kronos_cmd(("check -d %q --dir %q"):format(url, USERS))
        assert.equal(0, code)
        assert.equal("up to date\n", out)
        code, out = kronos_cmd(("heads --dir %q"):format(USERS))
        assert.equal(0, code)
        assert.matches("^4f1c2a9e7b30 %(.*4f1c2a9e7b30_create_users_table%.lua%)\n$", out)
        code, out = kronos_cmd(("downgrade base -d %q --dir %q"):format(url, USERS))
        assert.equal(0, code, out)
        assert.equal("downgrade 4f1c2a9e7b30 -> base, create users table\nnow at base; 1 reverted in "
            .. out:match("reverted in (%d+) ms") .. " ms\n", out)
        local err
        code, out, err = kronos_cmd(("check -d %q --dir %q"):format(url, USERS))
        assert.equal(3, code)
        assert.equal("", out)
        assert.equal("kronos: not up to date (1 pending: 4f1c2a9e7b30)\n", err)
        code, out = kronos_cmd(("current -d %q --dir %q"):format(url, USERS))
        assert.equal(0, code)
        assert.equal("base (no revision applied)\n", out)
    end)

    it("downgrade requires a target; -1 and +2 are targets; options go before or after the verb", function()
        local code, out, err = k(("downgrade --dir %q"):format(FIX .. "linear"))
        assert.equal(2, code, out)
        assert.matches("'downgrade' needs TARGET", err, 1, true)
        code, out = kronos_cmd(("--dir %q -d %q upgrade +2"):format(FIX .. "linear", url))
        assert.equal(0, code, out)
        assert.matches("upgrade base %-> aaa111, create t1\nupgrade aaa111 %-> bbb222, add t1%.name\n"
            .. "now at bbb222; 2 applied", out)
        code, out = k(("downgrade -1 --dir %q"):format(FIX .. "linear"))
        assert.equal(0, code, out)
        assert.matches("^downgrade bbb222 %-> aaa111, add t1%.name\nnow at aaa111; 1 reverted", out)
        code, out = kronos_cmd(("--dir=%s --database-url=%s downgrade -- -1"):format(q(FIX .. "linear"), q(url)))
        assert.equal(0, code, out)
        assert.matches("now at base; 1 reverted", out, 1, true)
    end)

    it("takes DATABASE_URL and KRONOS_MIGRATIONS from the environment", function()
        local k2, u, name = fresh()
        local env = ("DATABASE_URL=%s KRONOS_MIGRATIONS=%s"):format(q(u), q(FIX .. "linear"))
        local code, out = kronos_cmd("upgrade +1", env)
        assert.equal(0, code, out)
        assert.matches("upgrade base -> aaa111, create t1", out, 1, true)
        code, out = kronos_cmd("current", env)
        assert.equal(0, code)
        assert.equal("aaa111\n", out)
        assert.equal(0, (k2("downgrade base --dir " .. q(FIX .. "linear"))))
        H.drop_db(name)
    end)

    it("prints offline SQL without a database, and no progress lines", function()
        local code, out = kronos_cmd(("upgrade --sql --dir %q"):format(USERS), "DATABASE_URL=postgresql://nowhere.invalid/x")
        assert.equal(0, code)
        assert.matches("^BEGIN;\n", out)
        assert.matches('CREATE TABLE "users"', out, 1, true)
        assert.matches("COMMIT;\n$", out)
        assert.not_matches("now at", out, 1, true)
        code, out = kronos_cmd(("downgrade 4f1c2a9e7b30:base --sql --dir %q"):format(USERS))
        assert.equal(0, code)
        assert.matches('DROP TABLE "users";', out, 1, true)
    end)

    it("stamps, and stamp --purge clears revisions no file provides", function()
        local code, out = k(("stamp bbb222 --dir %q"):format(FIX .. "linear"))
        assert.equal(0, code, out)
        assert.equal("stamped: bbb222\n", out)
        code, out = k(("current --dir %q"):format(FIX .. "linear"))
        assert.equal(0, code)
        assert.equal("bbb222\n", out)
        local db = assert(kronos.connect(url))
        assert(db:exec("INSERT INTO kronos_version (revision, message) VALUES ('zzz999', 'from elsewhere')"))
        db:close()
        local err
        code, out, err = k(("current --dir %q"):format(FIX .. "linear"))
        assert.equal(1, code)
        assert.equal("bbb222\nzzz999 (unknown: no migration file provides it)\n", out)
        assert.matches("^kronos: the database has revision%(s%) that no migration file provides: zzz999", err)
        code, out = k(("history --dir %q"):format(FIX .. "linear"))
        assert.equal(0, code)
        assert.matches("^%? %-> zzz999 %(current, unknown: no migration file provides it%)\n", out)
        code, out, err = k(("check --dir %q"):format(FIX .. "linear"))
        assert.equal(5, code, out)
        assert.matches("unknown to the files: zzz999", err, 1, true)
        code, out = k(("stamp aaa111 --purge --dir %q"):format(FIX .. "linear"))
        assert.equal(0, code, out)
        assert.equal("stamped: aaa111\n", out)
        code, out = k(("current --dir %q"):format(FIX .. "linear"))
        assert.equal(0, code, out)
        assert.equal("aaa111\n", out)
        assert.equal(0, (k(("stamp base --dir %q"):format(FIX .. "linear"))))
    end)

    it("after a failure says what was rolled back and what was kept", function()
        local k2, _, name = fresh()
        local code, out, err = k2(("upgrade --dir %q"):format(FIX .. "failing"))
        assert.equal(1, code, out)
        assert.equal("upgrade base -> f1, a table that stays only if f2 succeeds (one transaction)\n"
            .. "upgrade f1 -> f2, fails half-way\n"
            .. "failed: nothing kept (the run was one transaction); rolled back: f1, f2\n", out)
        assert.matches("^kronos: .*002_fails%.lua: upgrade of revision 'f2' failed: division by zero "
            .. "%[division_by_zero 22012%]\n$", err)
        code, out = k2(("upgrade --per-migration --dir %q"):format(FIX .. "failing"))
        assert.equal(1, code, out)
        assert.equal("failed: kept (committed): f1; rolled back: f2", out:match("([^\n]*)\n$"))
        assert.equal("f1\n", select(2, k2(("current --dir %q"):format(FIX .. "failing"))))
        H.drop_db(name)
    end)

    it("names a committed transactional = false step as committed", function()
        local dir = migrations {
            ["1.lua"] = mig("t1", nil, "a table", "op.execute('CREATE TABLE nt (id int, label text)')",
                "down = function(op) op.execute('DROP TABLE nt') end"),
            ["2.lua"] = mig("t2", "t1", "an index", "op.create_index('ix_nt', 'nt', {'label'}, {concurrently = true})",
                "transactional = false, down = function(op) op.drop_index('ix_nt') end"),
            ["3.lua"] = mig("t3", "t2", "fails", "op.execute('SELECT 1/0')"),
        }
        local k2, _, name = fresh()
        local code, out = k2("upgrade --dir " .. q(dir))
        assert.equal(1, code, out)
        assert.equal("failed: kept (committed): t1, t2 (transactional = false: committed on its own); rolled back: t3",
            out:match("([^\n]*)\n$"))
        H.drop_db(name)
        os.execute("rm -rf " .. q(dir))
    end)

    it("keeps messages with line breaks and control bytes on one line", function()
        local dir = migrations { ["1.lua"] = mig("c1", nil, "two\nlines\27[31m red") }
        local k2, _, name = fresh()
        local code, out = k2("upgrade --dir " .. q(dir))
        assert.equal(0, code, out)
        assert.matches("^upgrade base %-> c1, two\\nlines\\027%[31m red\nnow at c1", out)
        code, out = k2("history --dir " .. q(dir))
        assert.equal(0, code, out)
        assert.equal(1, select(2, out:gsub("\n", "")))
        H.drop_db(name)
        os.execute("rm -rf " .. q(dir))
    end)

    it("hands -x KEY=VALUE to the migrations as op.x", function()
        local dir = migrations {
            ["1.lua"] = mig("x1", nil, "uses op.x",
                "op.execute('CREATE TABLE xv (k text, v text)'); for key, v in pairs(op.x) do "
                .. "op.db:exec('INSERT INTO xv VALUES ($1, $2)', key, v) end"),
        }
        local k2, u, name = fresh()
        local code, out = k2("upgrade -x tenant=acme -x mode=a=b --dir " .. q(dir))
        assert.equal(0, code, out)
        local db = assert(kronos.connect(u))
        local rows = assert(db:exec("SELECT k, v FROM xv ORDER BY k"))
        db:close()
        assert.same({ { k = "mode", v = "a=b" }, { k = "tenant", v = "acme" } }, { rows[1], rows[2] })
        code = k2("upgrade -x novalue --dir " .. q(dir))
        assert.equal(2, code)
        H.drop_db(name)
        os.execute("rm -rf " .. q(dir))
    end)

    it("prints JSON for current, heads, history and check", function()
        local cjson = require "cjson"
        local k2, _, name = fresh()
        local dir = FIX .. "linear"
        assert.equal(0, (k2("upgrade aaa111 --dir " .. q(dir))))
        local code, out = k2("current --json --dir " .. q(dir))
        assert.equal(0, code)
        assert.same({ current = { "aaa111" }, heads = { "ccc333" }, unknown = {}, finish_pending = {}, at_head = false },
            cjson.decode(out))
        assert.matches('"unknown":[]', out, 1, true)
        code, out = kronos_cmd("heads --json --dir " .. q(dir))
        assert.equal(0, code)
        local heads = cjson.decode(out).heads
        assert.equal(1, #heads)
        assert.equal("ccc333", heads[1].revision)
        assert.equal("create t3", heads[1].message)
        code, out = k2("history --json --dir " .. q(dir))
        assert.equal(0, code)
        local h = cjson.decode(out)
        assert.equal(true, h.database)
        assert.same({ "ccc333", "bbb222", "aaa111" }, { h.history[1].revision, h.history[2].revision, h.history[3].revision })
        assert.same({ "bbb222" }, h.history[1].down_revision)
        assert.equal(true, h.history[3].applied)
        assert.equal(false, h.history[1].applied)
        code, out = k2("check --json --dir " .. q(dir))
        assert.equal(3, code)
        local c = cjson.decode(out)
        assert.same({ "bbb222", "ccc333" }, c.pending)
        assert.equal(false, c.ok)
        assert.equal(3, c.exit)
        H.drop_db(name)
    end)

    it("history works without a database", function()
        local code, out, err = kronos_cmd(("history --dir %q -d %s"):format(FIX .. "linear",
            q("postgresql://nobody@127.0.0.1:1/none?connect_timeout=2")))
        assert.equal(0, code, err)
        assert.equal("bbb222 -> ccc333 (head), create t3\naaa111 -> bbb222, add t1.name\n<base> -> aaa111, create t1\n", out)
        assert.matches("no database reachable", err, 1, true)
        code, out = kronos_cmd(("history --verbose --dir %q -d %s"):format(FIX .. "branches",
            q("postgresql://nobody@127.0.0.1:1/none?connect_timeout=2")))
        assert.equal(0, code)
        assert.matches("Rev: r2\nParent: %(r1a, r1b%)\nChild: r3\nMerge point\nPath: .*w_r2%.lua\n\n    step r2\n", out)
    end)

    it("show, branches, heads --verbose describe the graph without a database", function()
        local env = "DATABASE_URL=postgresql://nowhere.invalid/x"
        local code, out = kronos_cmd(("show r0 --dir %q"):format(FIX .. "branches"), env)
        assert.equal(0, code, out)
        assert.matches("^Rev: r0\nParent: <base>\nBranches into: r1[ab], r1[ab]\nPath: .*z_r0%.lua\n\n    step r0\n$", out)
        local err
        code, out, err = kronos_cmd(("show r --dir %q"):format(FIX .. "branches"), env)
        assert.equal(1, code, out)
        assert.matches("'r' is a prefix of several revisions", err, 1, true)
        code, out = kronos_cmd(("branches --dir %q"):format(FIX .. "branches"), env)
        assert.equal(0, code, out)
        assert.matches("^r0 %(branch point%), step r0\n    %-> r1[ab], step r1[ab]\n    %-> r1[ab], step r1[ab]\n$", out)
        code, out = kronos_cmd(("branches --dir %q"):format(FIX .. "linear"), env)
        assert.equal(0, code)
        assert.equal("no branch points\n", out)
        code, out = kronos_cmd(("heads -v --dir %q"):format(FIX .. "twoheads"), env)
        assert.equal(0, code)
        assert.matches("left (head), left step (", out, 1, true)
        assert.matches("right (head), right step (", out, 1, true)
    end)

    it("fails with exit 1 and one line naming the file", function()
        local code, out, err = k(("upgrade --dir %q"):format(FIX .. "dup"))
        assert.equal(1, code, out)
        assert.matches("^kronos: .*002_b%.lua: revision 'a1' is also the revision of .*001_a%.lua %[duplicate_revision%]\n$", err)
        code, out, err = k(("upgrade --dir %q"):format(FIX .. "twoheads"))
        assert.equal(1, code, out)
        assert.matches("multiple_heads", err, 1, true)
    end)

    it("never shows a password", function()
        local port = url:match(":(%d+)/")
        local bad = ("postgresql://kronos_pw:s3cr3t-pw@127.0.0.1:%s/postgres"):format(port)
        local code, out, err = kronos_cmd(("current -d %q --dir %q"):format(bad, USERS))
        assert.equal(1, code, out)
        assert.matches("^kronos: ", err)
        assert.not_matches("s3cr3t", err, 1, true)
        assert.equal(1, select(2, err:gsub("\n", "")))
    end)

    it("exits 2 on usage errors, 0 on --help; --help documents every verb and flag", function()
        local code, _, err = kronos_cmd("frobnicate")
        assert.equal(2, code)
        assert.matches("unknown command 'frobnicate'", err, 1, true)
        assert.equal(2, (kronos_cmd("stamp")))
        assert.equal(2, (kronos_cmd("revision")))
        assert.equal(2, (kronos_cmd("")))
        assert.equal(2, (kronos_cmd("current --sql")))
        assert.equal(2, (kronos_cmd("upgrade --frob")))
        local out
        code, out = kronos_cmd("--help")
        assert.equal(0, code)
        local verbs = {}
        for line in out:match("Verbs:\n(.-)\n\n"):gmatch("[^\n]+") do verbs[#verbs + 1] = line:match("^   (%w+) ") end
        assert.same({ "init", "createdb", "upgrade", "downgrade", "finish", "current", "heads", "branches", "history", "show",
            "stamp", "check", "revision", "merge", "verify", "lint", "repair", "console" }, verbs)
        local flags = {
            upgrade = { "--sql", "--lock-timeout", "--statement-timeout", "--per-migration", "--allow-changed", "-x KEY=VALUE" },
            downgrade = { "--sql", "--per-migration", "-x KEY=VALUE" },
            current = { "--verbose", "--json" }, heads = { "--json" }, history = { "--verbose", "--json" },
            stamp = { "--sql", "--purge" }, check = { "--json", "--drift", "--scratch-url URL" },
            revision = { "-m, --message", "--rev-id" }, merge = { "-m, --message" }, createdb = { "--lock-timeout" },
            verify = { "--scratch-url URL" }, lint = { "--verbose" },
        }
        for _, v in ipairs(verbs) do
            code, out = kronos_cmd(v .. " --help")
            assert.equal(0, code, v)
            assert.matches("^Usage: kronos " .. v, out)
            local common = { "-d, --database-url URL", "--dir DIR", "--module NAME", "--version-table NAME", "Exit status:" }
            for _, f in ipairs(common) do
                assert.matches(f, out, 1, true)
            end
            for _, f in ipairs(flags[v] or {}) do assert.matches(f, out, 1, true) end
        end
        code, out = kronos_cmd("--version")
        assert.equal(0, code)
        assert.equal("kronos " .. kronos._VERSION .. "\n", out)
    end)

    it("check: exit 4 for a changed file, naming --allow-changed; repair records the new checksum once", function()
        local dir = migrations { ["1.lua"] = mig("r1", nil, "first") }
        local k2, _, name = fresh()
        assert.equal(0, (k2("upgrade --dir " .. q(dir))))
        H.write_file(dir .. "/1.lua", mig("r1", nil, "first", "op.execute('SELECT 2')"))
        local code, out, err = k2("check --dir " .. q(dir))
        assert.equal(4, code, out)
        assert.matches("changed since applied: r1 (--allow-changed", err, 1, true)
        H.write_file(dir .. "/2.lua", mig("r2", "r1", "second"))
        code, out, err = k2("upgrade --dir " .. q(dir))
        assert.equal(1, code, out)
        assert.matches("changed_migration", err, 1, true)
        assert.matches("--allow-changed", err, 1, true)
        assert.matches("kronos repair", err, 1, true)
        code, out = k2("repair --dir " .. q(dir))
        assert.equal(0, code, out)
        assert.equal("recorded the new checksum of: r1\n", out)
        code, out = k2("repair --dir " .. q(dir))
        assert.equal(0, code)
        assert.equal("nothing to repair: every applied file matches its recorded checksum\n", out)
        code, out = k2("upgrade --dir " .. q(dir))
        assert.equal(0, code, out)
        assert.equal(0, (k2("check --dir " .. q(dir))))
        -- in this process too (the memory checks run the specs' own process)
        local migrate = require "kronos.migrate"
        H.write_file(dir .. "/2.lua", mig("r2", "r1", "second, edited"))
        local db = assert(kronos.connect(H.url_for(name)))
        assert.same({ "r2" }, select(2, migrate.check { db = db, dir = dir }).changed)
        assert.same({ "r2" }, migrate.repair { db = db, dir = dir })
        assert.same({}, migrate.repair { db = db, dir = dir })
        assert.is_true(migrate.check { db = db, dir = dir })
        db:close()
        H.drop_db(name)
        os.execute("rm -rf " .. q(dir))
    end)

    it("creates revisions listing the op helpers; refuses several heads and points to merge", function()
        local dir = H.tmpdir("cli")
        os.execute(("cp %s/*.lua %s/"):format(q(USERS), q(dir)))
        local code, out = kronos_cmd(("revision -m %q --dir %q"):format("add avatars", dir))
        assert.equal(0, code, out)
        local path = out:match("^created (%S+)\n$")
        assert.truthy(path)
        assert.equal("4f1c2a9e7b30", dofile(path).down_revision)
        local text = H.read_file(path)
        for _, helper in ipairs { "op.create_table", "op.add_column", "op.alter_column", "op.create_index",
            "op.execute", "op.sql", "op.x", "transactional = false" } do
            assert.matches(helper, text, 1, true)
        end
        code, out = kronos_cmd(("heads --dir %q"):format(dir))
        assert.equal(0, code)
        assert.matches("^%x+ %(.*_add_avatars%.lua%)\n$", out)
        -- a second child of the users migration: two heads
        code, out = kronos_cmd(("revision -m second --rev-id b2 --dir %q"):format(dir))
        assert.equal(0, code, out)
        local first = dofile(path).revision
        H.write_file(dir .. "/b2_second.lua", (H.read_file(dir .. "/b2_second.lua"):gsub(
            'down_revision = "' .. first .. '"', 'down_revision = "4f1c2a9e7b30"')))
        local err
        code, out, err = kronos_cmd(("revision -m third --dir %q"):format(dir))
        assert.equal(1, code, out)
        assert.matches("several heads", err, 1, true)
        assert.matches("kronos merge -m MESSAGE heads", err, 1, true)
        code, out = kronos_cmd(("merge -m %q heads --rev-id m1 --dir %q"):format("join", dir))
        assert.equal(0, code, out)
        local merged = dofile(dir .. "/m1_join.lua")
        table.sort(merged.down_revision)
        local want = { first, "b2" }
        table.sort(want)
        assert.same(want, merged.down_revision)
        code, out = kronos_cmd(("heads --dir %q"):format(dir))
        assert.equal(0, code)
        assert.matches("^m1 %(", out)
        assert.equal(1, (kronos_cmd(("merge -m x heads --dir %q"):format(dir))))
        os.execute("rm -rf " .. q(dir))
    end)

    it("warns about a migration without down at revision and check", function()
        local dir = migrations { ["1.lua"] = mig("d1", nil, "no way back", nil, "") }
        local k2, _, name = fresh()
        local code, out, err = kronos_cmd(("revision -m next --dir %q"):format(dir))
        assert.equal(0, code, out)
        assert.matches("kronos: warning: .*1%.lua: revision 'd1' has no down function: it cannot be downgraded\n", err)
        assert.equal(0, (k2("upgrade d1 --dir " .. q(dir))))
        code, _, err = k2("check --dir " .. q(dir))
        assert.equal(3, code)
        assert.matches("revision 'd1' has no down function", err, 1, true)
        H.drop_db(name)
        os.execute("rm -rf " .. q(dir))
    end)

    it("init scaffolds a migrations directory; createdb creates a missing database, then upgrades", function()
        local base = H.tmpdir("cli")
        local code, out = kronos_cmd(("init %s"):format(q(base .. "/db/migrations")))
        assert.equal(0, code, out)
        assert.matches("^created .*/db/migrations/\n", out)
        code, out = kronos_cmd(("revision -m first --dir %s"):format(q(base .. "/db/migrations")))
        assert.equal(0, code, out)
        local err
        code, out, err = kronos_cmd(("init --dir %s"):format(q(base .. "/db/migrations")))
        assert.equal(1, code, out)
        assert.matches("exists and is not empty", err, 1, true)
        local name = "kronos_cli_init_" .. kronos.uuid():sub(1, 8)
        local target = H.url_for(name)
        code, out = kronos_cmd(("createdb -d %q --dir %q"):format(target, USERS))
        assert.equal(0, code, out)
        assert.matches("^created database " .. name .. "\nupgrade base %-> 4f1c2a9e7b30", out)
        assert.matches("now at 4f1c2a9e7b30 %(head%); 1 applied in %d+ ms\n$", out)
        code, out = kronos_cmd(("createdb -d %q --dir %q"):format(target, USERS))
        assert.equal(0, code, out)
        assert.equal("now at 4f1c2a9e7b30 (head); nothing to upgrade\n", out)
        H.drop_db(name)
        os.execute("rm -rf " .. q(base))
    end)

    it("while waiting on the migration lock, says who holds it", function()
        local k2, u, name = fresh()
        local holder = assert(kronos.connect({ url = u, application_name = "spec-holder" }))
        assert(holder:exec("SELECT pg_advisory_lock(" .. require("kronos.migrate").lock_key() .. ")"))
        local pid = holder:backend_pid()
        local code, out, err = k2("upgrade --lock-timeout 300ms --dir " .. q(FIX .. "linear"))
        holder:close()
        assert.equal(1, code, out)
        assert.matches("^waiting for the migration lock, held by pid " .. pid
            .. ' %(application_name "spec%-holder"%) for %d+ s\n', out)
        assert.matches("migration_locked", err, 1, true)
        H.drop_db(name)
    end)
end)

-- The program and the script: one command. What runs in the program is bin/kronos and the modules
-- of lua/kronos/ as they were when it was built; a no-op upgrade is one connection and no lock.
describe("the kronos program", function()
    local url, dbname
    setup(function()
        url, dbname = H.fresh_db("prog")
        assert.equal(0, (H.kronos(("upgrade -d %s --dir %s"):format(q(url), q(USERS)))))
    end)
    teardown(function() H.drop_db(dbname) end)

    -- bin/kronos run by the spec's interpreter, as H.kronos runs the program
    local function script(args)
        local errfile = os.tmpname()
        local code, out = H.run(("{ %s %s/bin/kronos %s 2>%q; }"):format(H.lua, q(H.root), args, errfile))
        local err = H.read_file(errfile)
        os.remove(errfile)
        return code, out, err
    end

    it("answers as bin/kronos does; from another directory, finds kronos.migrations in the checkout", function()
        local elsewhere = H.tmpdir("prog")
        for _, args in ipairs {
            "--version", "frobnicate", "upgrade --dir", ("heads --dir %s"):format(q(USERS)),
            ("upgrade -d %s --dir %s"):format(q(url), q(USERS)),
            ("current --json -d %s --module kronos.migrations"):format(q(url)),
            ("history -d %s --module kronos.migrations"):format(q(url)),
        } do
            local code, out, err = H.kronos(args)
            local scode, sout, serr = script(args)
            assert.equal(scode, code, args .. "\n" .. out .. err)
            assert.equal(sout, out, args)
            assert.equal(serr, err, args)
        end
        local code, out = H.run(("cd %s && %s --module kronos.migrations current -d %s"):format(
            q(elsewhere), q(H.command), q(url)))
        assert.equal(0, code, out)
        assert.equal("4f1c2a9e7b30 (head)\n", out)
        os.execute("rm -rf " .. q(elsewhere))
    end)

    it("runs the modules it was built with, whatever LUA_PATH says", function()
        -- a copy outside the checkout (no lua/ beside it): only LUA_PATH could supply modules
        local dir = H.tmpdir("prog")
        os.execute(("mkdir -p %s/kronos %s/bin && cp %s %s/bin/kronos"):format(q(dir), q(dir), q(H.command), q(dir)))
        H.write_file(dir .. "/kronos/cli.lua", "error('not this one')\n")
        H.write_file(dir .. "/kronos/migrate.lua", "error('not this one')\n")
        local code, out = H.run(("cd %s && LUA_PATH=%s %s/bin/kronos upgrade -d %s --dir %s"):format(
            q(dir), q(dir .. "/?.lua;;"), q(dir), q(url), q(USERS)))
        assert.equal(0, code, out)
        assert.equal("now at 4f1c2a9e7b30 (head); nothing to upgrade\n", out)
        -- what the script would have loaded from there
        code, out = H.run(("cd %s && LUA_PATH=%s %s -e 'require \"kronos.cli\"'"):format(q(dir), q(dir .. "/?.lua;;"), H.lua))
        assert.equal(1, code)
        assert.matches("not this one", out, 1, true)
        os.execute("rm -rf " .. q(dir))
    end)

    -- pg_stat_database counts what a backend did as it ends, just after its client: the figure
    -- sql reads on db (with its parameters), once it stops moving.
    local function settled(db, sql, ...)
        local last, n, still = -1, nil, 0
        for _ = 1, 100 do
            db:exec("SELECT pg_stat_clear_snapshot()")
            n = db:exec(sql, ...)[1].n
            still = n == last and still + 1 or 0
            if still == 5 then break end
            last = n
            db:exec("SELECT pg_sleep(0.05)")
        end
        return n
    end

    -- the sessions that ended on db's database
    local function sessions(db)
        return settled(db, "SELECT sessions AS n FROM pg_stat_database WHERE datname = current_database()")
    end

    -- the transactions of database name, read from another one (whose own statements do not count there)
    local function xacts(admin, name)
        return settled(admin, "SELECT xact_commit + xact_rollback AS n FROM pg_stat_database WHERE datname = $1", name)
    end

    it("a no-op upgrade costs the server what the psql program's `-c 'select 1'` does: one statement", function()
        local admin = assert(kronos.connect(H.base_url))
        finally(function() admin:close() end)
        local psql = H.trim(select(2, H.run("pg_config --bindir"))) .. "/psql"
        local before = xacts(admin, dbname)
        assert.equal(0, (H.run(("%s %s -qc 'select 1'"):format(q(psql), q(url)))))
        local one = xacts(admin, dbname) - before   -- the session's start and the statement
        assert.is_true(one >= 2)
        before = xacts(admin, dbname)
        local code, out, err = H.kronos(("upgrade -d %s --dir %s"):format(q(url), q(USERS)))
        assert.equal(0, code, out .. err)
        assert.equal("now at 4f1c2a9e7b30 (head); nothing to upgrade\n", out)
        assert.equal(one, xacts(admin, dbname) - before)
        -- inside a transaction the read first asks whether the table exists (an error would abort
        -- the caller's work); on a database without it, the answer is the same either way
        local db = assert(kronos.connect(url))
        finally(function() db:close() end)
        local migrate = require "kronos.migrate"
        local outside = assert(migrate.status { db = db, dir = USERS, version_table = "no_such_table" })
        local inside = assert(db:transaction(function()
            return assert(migrate.status { db = db, dir = USERS, version_table = "no_such_table_either" })
        end))
        assert.same({}, outside.current)
        assert.same({}, inside.current)
        assert.same(outside.pending, inside.pending)
        assert.equal(1, #outside.pending)
    end)

    it("a no-op upgrade opens one connection and does not wait for the migration lock", function()
        local db = assert(kronos.connect(url))
        local holder = assert(kronos.connect(url))
        finally(function() db:close(); holder:close() end)
        local before = sessions(db)
        local code, out, err = H.kronos(("upgrade -d %s --dir %s"):format(q(url), q(USERS)))
        assert.equal(0, code, out .. err)
        assert.equal(before + 1, sessions(db))
        -- another process holds the lock (a migration elsewhere, or one on its way): at head, no wait
        assert(holder:exec("SELECT pg_advisory_lock(" .. require("kronos.migrate").lock_key() .. ")"))
        code, out, err = H.kronos(("upgrade --lock-timeout 100ms -d %s --dir %s"):format(q(url), q(USERS)))
        assert.equal(0, code, out .. err)
        assert.equal("now at 4f1c2a9e7b30 (head); nothing to upgrade\n", out)
        -- with something to do, it waits for the lock, and says so
        local dir = migrations { ["001_a.lua"] = mig("a1", "4f1c2a9e7b30", "one") }
        code, out, err = H.kronos(("upgrade --lock-timeout 100ms -d %s --dir %s --dir %s"):format(q(url), q(USERS), q(dir)))
        assert.equal(1, code, out)
        assert.matches("migration_locked", err, 1, true)
        os.execute("rm -rf " .. q(dir))
    end)
end)

-- The README's CLI section: every `$ ` line of its console block runs in a fresh directory and its
-- output (stdout and stderr together) must be the lines that follow, `...` matching anything.
describe("the README's CLI session", function()
    it("runs as shown", function()
        local readme = assert(H.read_file(H.root .. "/README.md"))
        local section = readme:match("<!%-%- section:cli %-%->(.-)<!%-%- /section:cli %-%->")
        local block = assert(section:match("```console\n(.-)```"))
        local steps = {}
        for line in block:gmatch("([^\n]*)\n") do
            local cmd = line:match("^%$ (.*)$")
            if cmd then
                steps[#steps + 1] = { cmd = cmd, out = {}, code = 0 }
            else
                local code = line:match("^%(exit (%d+)%)$")
                if code then steps[#steps].code = tonumber(code) else table.insert(steps[#steps].out, line) end
            end
        end
        assert.is_true(#steps > 20)
        local dir = H.tmpdir("readme")
        os.execute(("mkdir -p %s/.bin"):format(q(dir)))
        H.write_file(dir .. "/.bin/kronos", ("#!/bin/sh\nexec %s \"$@\"\n"):format(q(H.command)))
        os.execute(("chmod +x %s/.bin/kronos"):format(q(dir)))
        H.drop_db("kronos_readme")
        local env = ("cd %s && PATH=%s/.bin:$PATH DATABASE_URL=%s && export DATABASE_URL && unset KRONOS_MIGRATIONS; ")
            :format(q(dir), q(dir), q(H.url_for("kronos_readme")))
        for _, step in ipairs(steps) do
            local code, out = H.run(env .. "{ " .. step.cmd .. "\n}")
            local want = table.concat(step.out, "\n")
            local pattern = "^" .. want:gsub("[%^%$%(%)%%%.%[%]%*%+%-%?]", "%%%0"):gsub("%%%.%%%.%%%.", ".-")
                .. (want == "" and "" or "\n") .. "$"
            assert.equal(step.code, code, step.cmd .. "\n" .. out)
            assert.matches(pattern, out, nil, false, step.cmd)
        end
        H.drop_db("kronos_readme")
        os.execute("rm -rf " .. q(dir))
    end)
end)
