-- Where migrations come from (kronos.migrate's loader): several directories (`dir = {...}`,
-- KRONOS_MIGRATIONS as a ':' list, the CLI's repeated --dir) and Lua modules (`modules = {...}`,
-- --module): checksums, the graph checks and offline SQL are the same for every source, and the
-- users migration shipped as kronos.migrations is the directory's, byte for byte.
local H = require "spec.helper"
local kronos = require "kronos"
local migrate = require "kronos.migrate"

local q, sh, spit, slurp = H.shell_quote, H.sh, H.write_file, H.read_file
local ROOT = H.root
local USERS_DIR = ROOT .. "/migrations"

-- A migration module's source: revision, parents (nil, a string or a list), the table it creates.
local function migration(rev, down, tbl)
    local d = down == nil and "nil" or type(down) == "string" and ("%q"):format(down)
        or "{ \"" .. table.concat(down, "\", \"") .. "\" }"
    return ([[
return {
    revision = %q, down_revision = %s, message = "create %s",
    up = function(op) op.execute("CREATE TABLE %s (id integer)") end,
    down = function(op) op.execute("DROP TABLE %s") end,
}
]]):format(rev, d, tbl, tbl, tbl)
end

describe("migration sources", function()
    local tmp, saved_path, url, dbname, db

    -- tmp/a and tmp/b are directories; tmp/mods/... are modules `mods.*` on package.path.
    setup(function()
        tmp = H.tmpdir("sources")
        sh(("mkdir -p %s/a %s/b %s/mods/app %s/empty"):format(q(tmp), q(tmp), q(tmp), q(tmp)))
        spit(tmp .. "/a/1_base.lua", migration("s1", nil, "s1"))
        spit(tmp .. "/b/2_next.lua", migration("s2", "s1", "s2"))
        -- a module that is one migration, one that is a list of names, one that is a list of tables
        spit(tmp .. "/mods/app/m3.lua", migration("m3", "s2", "m3"))
        spit(tmp .. "/mods/app/m4.lua", migration("m4", "m3", "m4"))
        spit(tmp .. "/mods/app/init.lua", 'return { "mods.app.m3", "mods.app.m4" }\n')
        spit(tmp .. "/mods/inline.lua", "return {\n" ..
            migration("i1", "4f1c2a9e7b30", "i1"):gsub("^return ", ""):gsub("\n$", ",\n") ..
            migration("i2", "i1", "i2"):gsub("^return ", ""):gsub("\n$", ",\n") .. "}\n")
        spit(tmp .. "/mods/all.lua", 'return { "mods.app", "kronos.migrations" }\n')
        spit(tmp .. "/mods/loop_a.lua", 'return { "mods.loop_b" }\n')
        spit(tmp .. "/mods/loop_b.lua", 'return { "mods.loop_a" }\n')
        spit(tmp .. "/mods/number.lua", "return 42\n")
        spit(tmp .. "/mods/baditem.lua", "return { true }\n")
        spit(tmp .. "/mods/dup.lua", migration("s1", nil, "dup"))
        saved_path = package.path
        package.path = tmp .. "/?.lua;" .. tmp .. "/?/init.lua;" .. package.path
        url, dbname = H.fresh_db("sources")
        db = assert(kronos.connect(url))
    end)

    teardown(function()
        package.path = saved_path
        if db then db:close() end
        if dbname then H.drop_db(dbname) end
        if tmp then H.run("rm -rf " .. q(tmp)) end
    end)

    local function reset()
        assert(db:script("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    end

    local function revisions(list)
        local revs = {}
        for i, e in ipairs(list) do revs[i] = e.migration.revision end
        return revs
    end

    it("several directories make one graph", function()
        reset()
        local o = { db = db, dir = { tmp .. "/a", tmp .. "/b" } }
        assert.same({ "s2" }, migrate.heads(o))
        assert.same({ "s1", "s2" }, migrate.upgrade(o))
        assert.same({ "s2" }, migrate.current(o))
        -- b alone: s2's parent is unknown
        local ok, err = pcall(migrate.heads, { dir = tmp .. "/b" })
        assert.is_false(ok)
        assert.matches("s1", tostring(err), 1, true)
    end)

    it("a module is a migration, a list of module names, or a list of migrations; nested lists", function()
        assert.same({ "m3", "m4" }, revisions(migrate.load { modules = { "mods.app" } }))
        assert.same({ "m3" }, revisions(migrate.load { modules = { "mods.app.m3" } }))
        assert.same({ "i1", "i2" }, revisions(migrate.load { modules = { "mods.inline" } }))
        assert.same({ "m3", "m4", "4f1c2a9e7b30" }, revisions(migrate.load { modules = { "mods.all" } }))
        -- a module listed twice (directly and through a list) loads once
        assert.same({ "m3", "m4" }, revisions(migrate.load { modules = { "mods.app.m3", "mods.app" } }))
        -- directories first, then modules; the graph spans them
        reset()
        local o = { db = db, dir = { tmp .. "/a", tmp .. "/b" }, modules = { "mods.app" } }
        assert.same({ "s1", "s2", "m3", "m4" }, migrate.upgrade(o))
        assert.same({ "m4" }, migrate.current(o))
    end)

    it("the checksum of a module's migration is over the module's source file", function()
        local function sha(path) return migrate.sha256(assert(slurp(path))) end
        local list = migrate.load { modules = { "mods.app", "mods.inline" } }
        assert.equals(tmp .. "/mods/app/m3.lua", list[1].file)
        assert.equals(sha(tmp .. "/mods/app/m3.lua"), list[1].checksum)
        assert.equals(sha(tmp .. "/mods/app/m4.lua"), list[2].checksum)
        -- a list of tables: every migration of the module has the module's checksum
        assert.equals(tmp .. "/mods/inline.lua", list[3].file)
        assert.equals(sha(tmp .. "/mods/inline.lua"), list[3].checksum)
        assert.equals(list[3].checksum, list[4].checksum)
        -- a module whose file changed after it was applied is "changed", as a file in a directory is
        reset()
        local o = { db = db, dir = { tmp .. "/a", tmp .. "/b" }, modules = { "mods.app" } }
        assert.same({ "s1", "s2", "m3", "m4" }, migrate.upgrade(o))
        local m4 = tmp .. "/mods/app/m4.lua"
        local before = slurp(m4)
        spit(m4, before .. "-- edited\n")
        finally(function() spit(m4, before) end)
        local ok, why = migrate.check(o)
        assert.is_false(ok)
        assert.same({ "m4" }, why.changed)
    end)

    it("kronos.migrations is the users migration of migrations/: same revision, same checksum", function()
        local from_module = migrate.load { modules = { "kronos.migrations" } }
        local from_dir = migrate.load(USERS_DIR)
        assert.equals(1, #from_module)
        assert.equals("4f1c2a9e7b30", from_module[1].migration.revision)
        assert.equals(from_dir[1].checksum, from_module[1].checksum)
        assert.equals(migrate.sha256(assert(slurp(USERS_DIR .. "/4f1c2a9e7b30_create_users_table.lua"))),
            from_module[1].checksum)
        -- offline SQL is the same statement for statement
        assert.equals(migrate.upgrade { sql = true, dir = USERS_DIR },
            migrate.upgrade { sql = true, modules = { "kronos.migrations" } })
        -- a database migrated from the directory is at head for the module, and the other way round
        reset()
        assert.same({ "4f1c2a9e7b30" }, migrate.upgrade { db = db, dir = USERS_DIR })
        assert.is_true(migrate.check { db = db, modules = { "kronos.migrations" } })
        assert.same({}, migrate.upgrade { db = db, modules = { "kronos.migrations" } })
        reset()
        assert.same({ "4f1c2a9e7b30" }, migrate.upgrade { db = db, modules = { "kronos.migrations" } })
        assert.is_true(migrate.check { db = db, dir = USERS_DIR })
        -- and a module's migrations build on it
        assert.same({ "i1", "i2" }, migrate.upgrade { db = db, modules = { "kronos.migrations", "mods.inline" } })
    end)

    it("the graph checks hold across sources and name the files", function()
        local ok, err = pcall(migrate.heads, { dir = tmp .. "/a", modules = { "mods.dup" } })
        assert.is_false(ok)
        assert.equals("duplicate_revision", err.code)
        assert.matches(tmp .. "/mods/dup.lua", err.message, 1, true)
        assert.matches(tmp .. "/a/1_base.lua", err.message, 1, true)
        ok, err = pcall(migrate.heads, { dir = USERS_DIR, modules = { "kronos.migrations" } })
        assert.is_false(ok)
        assert.equals("duplicate_revision", err.code)
    end)

    it("a bad module is an error naming it", function()
        local cases = {
            { "mods.nowhere", "migration module 'mods.nowhere' not found on package.path (no file " },
            { "mods.loop_a", "migration module 'mods.loop_a' lists itself (through mods.loop_a -> mods.loop_b)" },
            { "mods.number",
              tmp .. "/mods/number.lua: migration module 'mods.number' returned a number, not a migration or a list" },
            { "mods.baditem", tmp .. "/mods/baditem.lua: item 1 of migration module 'mods.baditem' is a boolean" },
        }
        for _, c in ipairs(cases) do
            local ok, err = pcall(migrate.load, { modules = { c[1] } })
            assert.is_false(ok)
            assert.equals("bad_migration", err.code)
            assert.not_matches("\n", tostring(err), 1, true)
            assert.matches(c[2], err.message, 1, true)
        end
        local ok, err = pcall(migrate.load, { modules = { 42 } })
        assert.is_false(ok)
        assert.equals("bad_argument", err.code)
        ok, err = pcall(migrate.load, { dir = { tmp .. "/a", false } })
        assert.is_false(ok)
        assert.equals("bad_argument", err.code)
    end)

    it("an empty list of modules or directories has no migration; revision writes into the first directory", function()
        assert.same({}, migrate.load { dir = {} })
        assert.same({}, migrate.load { dir = { tmp .. "/empty" } })
        local path = migrate.revision { dir = { tmp .. "/empty", tmp .. "/a", tmp .. "/b" }, modules = { "mods.app" },
            message = "next", revision = "n5" }
        finally(function() os.remove(path) end)
        assert.equals(tmp .. "/empty/n5_next.lua", path)
        -- its parent is the head of every source
        local list = migrate.load(tmp .. "/empty")
        assert.equals("m4", list[1].migration.down_revision)
    end)

    describe("the CLI", function()
        local function kronos_cli(env, args)
            return H.run(("cd %s && env %s LUA_PATH=%s %s %s/bin/kronos %s"):format(q(tmp), env,
                q(tmp .. "/?.lua;" .. tmp .. "/?/init.lua;" .. (os.getenv("LUA_PATH") or ";;")),
                H.lua, q(ROOT), args))
        end

        -- the offline SQL of the CLI's sources equals the API's for the same sources
        it("--dir repeats (before and after the verb) and --module names modules", function()
            local code, out = kronos_cli("", ("--dir %s upgrade --sql --dir %s --module mods.app")
                :format(q(tmp .. "/a"), q(tmp .. "/b")))
            assert.equals(0, code, out)
            assert.equals(migrate.upgrade { sql = true, dir = { tmp .. "/a", tmp .. "/b" }, modules = { "mods.app" } }, out)
            assert.matches('CREATE TABLE m4', out, 1, true)
            code, out = kronos_cli("", "--module kronos.migrations --module mods.inline upgrade --sql")
            assert.equals(0, code, out)
            assert.equals(migrate.upgrade { sql = true, modules = { "kronos.migrations", "mods.inline" } }, out)
        end)

        it("KRONOS_MIGRATIONS is a ':'-separated list of directories", function()
            local code, out = kronos_cli("KRONOS_MIGRATIONS=" .. q(tmp .. "/a:" .. tmp .. "/b"), "upgrade --sql")
            assert.equals(0, code, out)
            assert.equals(migrate.upgrade { sql = true, dir = { tmp .. "/a", tmp .. "/b" } }, out)
            assert.matches('CREATE TABLE s2', out, 1, true)
        end)
    end)
end)
