-- kronos.migrate: the revision graph, targets, the version table, offline SQL, failures,
-- checksums, stamp, check, revision, locking. Fixtures: spec/fixtures/migrate/<case>/.
local H = require "spec.helper"
local kronos = require "kronos"
local migrate = require "kronos.migrate"

local FIX = H.root .. "/spec/fixtures/migrate/"

local url, dbname, db

local function fresh()
    if db then db:close() end
    if dbname then H.drop_db(dbname) end
    url, dbname = H.fresh_db("migrate")
    db = assert(kronos.connect(url))
end

-- an empty public schema: as good as a new database, and much faster
local function reset()
    assert(db:script("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
end

local function opts(case, extra)
    local o = { dir = FIX .. case, db = db }
    for k, v in pairs(extra or {}) do o[k] = v end
    return o
end

local function tables()
    local rows = assert(db:exec([[SELECT relname FROM pg_class WHERE relkind = 'r'
        AND relnamespace = 'public'::regnamespace AND relname <> 'kronos_version' ORDER BY 1]]))
    local names = {}
    for i, r in ipairs(rows) do names[i] = r.relname end
    return names
end

local function versions()
    local rows = assert(db:exec("SELECT revision FROM kronos_version ORDER BY revision"))
    local revs = {}
    for i, r in ipairs(rows) do revs[i] = r.revision end
    return revs
end

local function raises(fn)
    local ok, err = pcall(fn)
    assert.is_false(ok)
    assert.is_true(kronos.is_error(err), "not an error object: " .. tostring(err))
    return err
end

-- copies a fixture into a scratch directory that the test may change
local function scratch(case)
    local dir = os.tmpname()
    os.remove(dir)
    assert(os.execute(("mkdir -p %q && cp %q/*.lua %q/"):format(dir, FIX .. case, dir)))
    return dir
end

-- writes a graph of migrations into a scratch directory: revs = { {rev, parents, extra fields}, ... };
-- each creates table t_<rev> and drops it on the way down
local function graph(revs)
    local dir = os.tmpname()
    os.remove(dir)
    assert(os.execute(("mkdir -p %q"):format(dir)))
    for i, r in ipairs(revs) do
        local down = r[2] == nil and "nil" or type(r[2]) == "table" and ("{%q, %q%s}"):format(r[2][1], r[2][2],
            r[2][3] and (", %q"):format(r[2][3]) or "") or ("%q"):format(r[2])
        local f = assert(io.open(("%s/%03d_%s.lua"):format(dir, i, r[1]), "w"))
        f:write(("return { revision = %q, down_revision = %s, %s\n"):format(r[1], down, r[3] or ""),
            ("  up = function(op) op.execute('CREATE TABLE t_%s (id int)') end,\n"):format(r[1]),
            ("  down = function(op) op.execute('DROP TABLE t_%s') end }\n"):format(r[1]))
        f:close()
    end
    return dir
end

describe("kronos.migrate", function()
    setup(fresh)
    teardown(function()
        db:close()
        H.drop_db(dbname)
    end)

    describe("the revision graph", function()
        it("orders by down_revision, not by file name, and merges", function()
            local hist = migrate.history(opts("branches"))
            local order = {}
            for i, h in ipairs(hist) do order[i] = h.revision end
            assert.same({ "r0", "r1b", "r1a", "r2", "r3" }, order)
            assert.same({ "r1a", "r1b" }, hist[4].down_revision)
            assert.same({ "r3" }, migrate.heads(opts("branches")))
        end)

        it("names the file of a duplicate revision", function()
            local err = raises(function() migrate.heads(opts("dup")) end)
            assert.equal("duplicate_revision", err.code)
            assert.equal(FIX .. "dup/002_b.lua", err.file)
            assert.matches("001_a.lua", err.message, 1, true)
        end)

        it("names the file of an unknown down_revision", function()
            local err = raises(function() migrate.heads(opts("unknown")) end)
            assert.equal("unknown_revision", err.code)
            assert.equal(FIX .. "unknown/002_b.lua", err.file)
            assert.matches("'nope'", err.message, 1, true)
        end)

        it("detects a cycle", function()
            local err = raises(function() migrate.heads(opts("cycle")) end)
            assert.equal("cycle", err.code)
            assert.matches("cycle/00[23]_[bc].lua", err.file)
        end)

        it("rejects a file that does not return a migration table", function()
            local err = raises(function() migrate.heads(opts("bad")) end)
            assert.equal("bad_migration", err.code)
            assert.equal(FIX .. "bad/001_bad.lua", err.file)
            assert.matches("returned number", err.message, 1, true)
        end)

        it("refuses 'head' when there are several heads, naming them", function()
            assert.same({ "left", "right" }, migrate.heads(opts("twoheads")))
            local err = raises(function() migrate.upgrade(opts("twoheads", { sql = true })) end)
            assert.equal("multiple_heads", err.code)
            assert.matches("002_left.lua", err.message, 1, true)
            assert.matches("003_right.lua", err.message, 1, true)
            local sql = migrate.upgrade(opts("twoheads", { sql = true, target = "heads" }))
            assert.matches("upgrade left", sql, 1, true)
            assert.matches("upgrade right", sql, 1, true)
        end)

        it("reports a missing directory", function()
            local err = raises(function() migrate.heads { dir = FIX .. "nope" } end)
            assert.equal("no_migrations", err.code)
        end)
    end)

    describe("targets", function()
        before_each(reset)

        it("upgrade head, downgrade -1, +1, prefixes, rev+N, rev-N, base", function()
            assert.same({ "aaa111", "bbb222", "ccc333" }, migrate.upgrade(opts("linear")))
            assert.same({ "ccc333" }, migrate.current(opts("linear")))
            assert.same({ "t1", "t3" }, tables())
            assert.same({ "ccc333" }, migrate.downgrade(opts("linear", { target = "-1" })))
            assert.same({ "bbb222", "aaa111" }, migrate.downgrade(opts("linear", { target = "-2" })))
            assert.same({}, migrate.current(opts("linear")))
            assert.same({ "aaa111" }, migrate.upgrade(opts("linear", { target = "+1" })))
            assert.same({ "bbb222" }, migrate.upgrade(opts("linear", { target = "bb" })))
            assert.same({}, migrate.upgrade(opts("linear", { target = "aaa111+1" })))
            assert.same({ "bbb222" }, migrate.downgrade(opts("linear", { target = "bbb222-1" })))
            assert.same({ "bbb222", "ccc333" }, migrate.upgrade(opts("linear", { target = "aaa111+2" })))
            assert.same({ "aaa111", "bbb222", "ccc333" }, versions())
            assert.same({ "ccc333", "bbb222", "aaa111" }, migrate.downgrade(opts("linear", { target = "base" })))
            assert.same({}, versions())
            assert.same({}, tables())
        end)

        it("rejects targets that go the wrong way or are out of range", function()
            assert.equal("bad_target", raises(function() migrate.upgrade(opts("linear", { target = "-1" })) end).code)
            assert.equal("bad_target", raises(function() migrate.downgrade(opts("linear", { target = "+1" })) end).code)
            assert.equal("bad_target", raises(function() migrate.upgrade(opts("linear", { target = "+4" })) end).code)
            assert.equal("bad_target", raises(function() migrate.downgrade(opts("linear", { target = "-1" })) end).code)
            assert.equal("unknown_revision", raises(function() migrate.upgrade(opts("linear", { target = "zzz" })) end).code)
            assert.equal("bad_target", raises(function() migrate.upgrade(opts("linear", { target = "base:head" })) end).code)
            assert.same({}, migrate.current(opts("linear")))
            assert.same({}, tables())
        end)

        it("follows branches and merges", function()
            assert.equal("ambiguous_revision", raises(function() migrate.upgrade(opts("branches", { target = "r1" })) end).code)
            assert.same({ "r0", "r1a" }, migrate.upgrade(opts("branches", { target = "r1a" })))
            assert.same({ "r1a" }, migrate.current(opts("branches")))
            assert.same({ "r1b" }, migrate.upgrade(opts("branches", { target = "r1b" })))
            assert.same({ "r1b", "r1a" }, migrate.current(opts("branches")))
            local err = raises(function() migrate.upgrade(opts("branches", { target = "r0+1" })) end)
            assert.matches("branch point", err.message, 1, true)
            assert.same({ "r2", "r3" }, migrate.upgrade(opts("branches", { target = "heads" })))
            assert.same({ "r3" }, migrate.current(opts("branches")))
            -- down to a branch: what descends from it goes, the other branch stays
            assert.same({ "r3", "r2" }, migrate.downgrade(opts("branches", { target = "r1a" })))
            assert.same({ "r1b", "r1a" }, migrate.current(opts("branches")))
            assert.same({ "t_r0", "t_r1a", "t_r1b" }, tables())
            assert.same({ "r1a", "r1b", "r0" }, migrate.downgrade(opts("branches")))
            assert.same({}, tables())
        end)
    end)

    describe("offline SQL", function()
        before_each(reset)

        it("is exactly what the online run executes", function()
            local sql, offline = migrate.upgrade(opts("linear", { sql = true }))
            assert.equal("BEGIN", offline[1])
            assert.equal("COMMIT", offline[#offline])
            assert.matches("SELECT pg_advisory_xact_lock(" .. migrate.lock_key() .. ");", sql, 1, true)
            assert.matches("-- upgrade aaa111: create t1\n", sql, 1, true)
            local online = {}
            migrate.upgrade(opts("linear", { echo = function(s) online[#online + 1] = s end }))
            assert.same(offline, online)
            local _, down = migrate.downgrade(opts("linear", { sql = true, target = "ccc333:base" }))
            online = {}
            migrate.downgrade(opts("linear", { echo = function(s) online[#online + 1] = s end }))
            assert.same(down, online)
        end)

        it("takes from:to ranges and needs one to downgrade", function()
            local sql = migrate.upgrade(opts("branches", { sql = true, target = "r1a:r3" }))
            assert.not_matches("t_r1a", sql, 1, true)
            assert.matches("CREATE TABLE t_r1b", sql, 1, true)
            assert.matches("CREATE TABLE t_r3", sql, 1, true)
            assert.equal("bad_target", raises(function() migrate.downgrade(opts("linear", { sql = true })) end).code)
            local stamp = migrate.stamp(opts("linear", { sql = true, target = "bbb222" }))
            assert.matches("VALUES ('bbb222', 'add t1.name'", stamp, 1, true)
            assert.same({}, tables()) -- offline touched nothing
        end)
    end)

    describe("hostile names", function()
        before_each(reset)

        it("stay names and literals through op, online and offline", function()
            assert(db:exec("CREATE TABLE keep (id integer)"))
            local sql, offline = migrate.upgrade(opts("hostile", { sql = true }))
            -- the message stays inside its comment line
            assert.matches("\n-- upgrade h1: it's a \"hostile\" message\\r\\nDROP TABLE keep; --\n", sql, 1, true)
            local online = {}
            assert.same({ "h1" }, migrate.upgrade(opts("hostile", { echo = function(s) online[#online + 1] = s end })))
            assert.same(offline, online)
            assert.same({ "keep", 'x"; DROP TABLE keep; --' }, tables())
            local cols = assert(db:exec([[SELECT attname FROM pg_attribute WHERE attrelid = '"x""; DROP TABLE keep; --"'::regclass
                                          AND attnum > 0 ORDER BY attnum]]))
            assert.equal("ünï cødé", cols[1].attname)
            assert.equal("a'b", cols[2].attname)
            local row = assert(db:exec("SELECT message FROM kronos_version"))[1]
            assert.equal("it's a \"hostile\" message\r\nDROP TABLE keep; --", row.message)
            assert.same({ "h1" }, migrate.downgrade(opts("hostile")))
            assert.same({ "keep" }, tables())
        end)
    end)

    describe("failures", function()
        before_each(reset)

        it("leave the database exactly as before, naming the file and the SQL error", function()
            local err = raises(function() migrate.upgrade(opts("failing")) end)
            assert.equal("division_by_zero", err.code)
            assert.equal("22012", err.sqlstate)
            assert.equal(FIX .. "failing/002_fails.lua", err.file)
            assert.equal("f2", err.revision)
            assert.matches("002_fails.lua: upgrade of revision 'f2' failed: division by zero", tostring(err), 1, true)
            assert.same({}, tables())
            assert.same({}, migrate.current(opts("failing")))
            -- the connection is usable and outside any transaction afterwards
            assert.is_false(db:in_transaction())
            assert.equal(1, assert(db:exec("SELECT 1 AS n"))[1].n)
        end)

        it("keep earlier migrations with one transaction per migration", function()
            raises(function() migrate.upgrade(opts("failing", { transaction_per_migration = true })) end)
            assert.same({ "f_one" }, tables())
            assert.same({ "f1" }, versions())
        end)

        it("wrap Lua errors raised by a migration", function()
            local dir = scratch("linear")
            local f = assert(io.open(dir .. "/002_two.lua", "w"))
            f:write('return { revision = "bbb222", down_revision = "aaa111", up = function(op) error("boom") end }')
            f:close()
            local err = raises(function() migrate.upgrade { dir = dir, db = db } end)
            assert.equal("migration_failed", err.code)
            assert.equal(dir .. "/002_two.lua", err.file)
            assert.matches("boom", err.message, 1, true)
            assert.same({}, tables())
            os.execute(("rm -rf %q"):format(dir))
        end)
    end)

    describe("Alembic's target semantics", function()
        before_each(reset)
        local function g(revs, extra)
            local dir = graph(revs)
            return function(more)
                local o = { dir = dir, db = db }
                for k, v in pairs(extra or {}) do o[k] = v end
                for k, v in pairs(more or {}) do o[k] = v end
                return o
            end
        end
        local chain = { { "a1" }, { "b2", "a1" }, { "c3", "b2" } }

        it("downgrade to a destination that is not applied fails, and root-1 is base", function()
            local o = g(chain)
            migrate.upgrade(o { target = "a1" })
            local err = raises(function() migrate.downgrade(o { target = "c3" }) end)
            assert.equal("bad_target", err.code)
            assert.matches("not a valid downgrade target", err.message, 1, true)
            assert.equal("bad_target", raises(function() migrate.downgrade(o { target = "c3-1" }) end).code)
            assert.same({ "a1" }, versions())
            migrate.upgrade(o { target = "b2" })
            assert.same({ "b2", "a1" }, migrate.downgrade(o { target = "a1-1" }))
            assert.same({}, versions())
            -- downgrade to the current head is a no-op, not an error
            migrate.upgrade(o { target = "b2" })
            assert.same({}, migrate.downgrade(o { target = "b2" }))
        end)

        it("+N counts from the database's current heads and refuses ambiguous walks", function()
            local o = g { { "a1" }, { "b2", "a1" }, { "c1" } }
            local err = raises(function() migrate.upgrade(o { target = "+1" }) end)
            assert.equal("bad_target", err.code)
            assert.matches("ambiguous", err.message, 1, true)
            migrate.stamp(o { target = "a1" })
            assert.same({ "b2" }, migrate.upgrade(o { target = "+1" }))
            migrate.upgrade(o { target = "c1" })
            assert.matches("several heads", raises(function() migrate.upgrade(o { target = "+1" }) end).message, 1, true)
            -- branch point: two children
            o = g { { "r" }, { "x", "r" }, { "y", "r" } }
            migrate.stamp(o { target = "base", purge = true })
            migrate.upgrade(o { target = "r" })
            assert.matches("ambiguous walk", raises(function() migrate.upgrade(o { target = "+1" }) end).message, 1, true)
        end)

        it("-N across a merge is refused; -N with several heads is refused (give a branch or a revision)", function()
            local o = g { { "r" }, { "x", "r" }, { "y", "r" }, { "m", { "x", "y" } } }
            migrate.upgrade(o())
            -- as in Alembic, a walk down from a merge is ambiguous, one step or two
            assert.matches("merge point", raises(function() migrate.downgrade(o { target = "-2" }) end).message, 1, true)
            assert.matches("merge point", raises(function() migrate.downgrade(o { target = "-1" }) end).message, 1, true)
            assert.same({ "m" }, migrate.downgrade(o { target = "x" }))
            assert.same({ "x", "y" }, migrate.current(o()))
            local err = raises(function() migrate.downgrade(o { target = "-1" }) end)
            assert.matches("several heads", err.message, 1, true)
            -- y-1 is r: everything above r goes, as in Alembic; y@-1 keeps to y's branch
            assert.same({ "y" }, migrate.downgrade(o { target = "y@-1" }))
            assert.same({ "x" }, migrate.current(o()))
            migrate.upgrade(o { target = "y" })
            assert.same({ "y", "x" }, migrate.downgrade(o { target = "y-1" }))
        end)

        it("stamp moves only the target's lineage", function()
            local o = g { { "a1" }, { "b2", "a1" }, { "z1" } }
            migrate.upgrade(o { target = "heads" })
            assert.same({ "a1", "z1" }, migrate.stamp(o { target = "a1" })) -- the heads afterwards: z1 stays
            assert.same({ "a1", "z1" }, versions())
            assert(db:exec("DROP TABLE t_b2")) -- what the stamp says; z1 stays applied and is not run again
            assert.same({ "b2" }, migrate.upgrade(o { target = "heads" }))
            assert.same({ "a1", "b2", "z1" }, versions())
            assert.same({}, migrate.stamp(o { target = "base" }))
            assert.same({ "b2" }, migrate.stamp(o { target = "b2", purge = true }))
            assert.same({ "a1", "b2" }, versions())
        end)

        it("branch labels, depends_on, base+N, upgrade rev-N, downgrade rev+N", function()
            local o = g {
                { "a1", nil, "branch_labels = {'alpha'}," }, { "a2", "a1" }, { "a3", "a2" },
                { "b1", nil, "branch_labels = 'beta', depends_on = 'a2'," }, { "b2", "b1" },
            }
            assert.matches("ambiguous walk", raises(function() migrate.upgrade(o { target = "base+1" }) end).message, 1, true)
            assert.same({ "a1" }, migrate.upgrade(o { target = "alpha@+1" }))
            assert.same({ "a2" }, migrate.upgrade(o { target = "alpha@+1" }))
            assert.same({ "b1" }, migrate.upgrade(o { target = "beta@+1" }))
            assert.same({ "b2" }, migrate.upgrade(o { target = "beta@head" }))
            assert.same({ "a3" }, migrate.upgrade(o { target = "a1@head" }))
            assert.same({ "a3" }, migrate.downgrade(o { target = "alpha@-1" }))
            assert.same({ "b2" }, migrate.downgrade(o { target = "beta@b1" }))
            -- b1 depends on a2: taking a2 away takes b1 with it
            assert.same({ "b1", "a2" }, migrate.downgrade(o { target = "a1" }))
            assert.same({ "a2", "b1" }, migrate.upgrade(o { target = "b1" })) -- with its dependency
            -- b1 is a base: b1-1 is base, and downgrading to base takes every branch (as Alembic does)
            assert.same({ "b1", "a2", "a1" }, migrate.downgrade(o { target = "b1-1" }))
            assert.same({ "a1", "a2", "a3" }, migrate.upgrade(o { target = "a3-0" }))
            assert.same({ "a3", "a2" }, migrate.downgrade(o { target = "a1+0" }))
            assert.same({ "a2" }, migrate.upgrade(o { target = "a3-1" }))
            assert.same({ "a2" }, migrate.downgrade(o { target = "alpha@base+1" }))
            local err = raises(function() migrate.upgrade(o { target = "alpha@b2" }) end)
            assert.matches("not a member of branch", err.message, 1, true)
            assert.same({ "a3", "b2" }, migrate.heads(o()))
            o = g(chain)
            reset()
            assert.same({ "a1", "b2" }, migrate.upgrade(o { target = "base+2" }))
            assert.same({ "b2" }, migrate.downgrade(o { target = "base+1" }))
        end)

        it("depends_on as a list, and naming a branch label (the revision that carries it)", function()
            local o = g {
                { "a1", nil, "branch_labels = {'alpha'}," }, { "a2", "a1" },
                { "c1" },
                { "b1", nil, "depends_on = {'alpha', 'c1'}," }, { "b2", "b1" },
            }
            local function sorted(t) table.sort(t) return t end
            -- b1 needs a1 (alpha's revision, not a2) and c1
            assert.same({ "a1", "b1", "c1" }, sorted(migrate.upgrade(o { target = "b1" })))
            assert.same({ "a1", "b1", "c1" }, versions())
            -- taking either dependency away takes b1 (and what is above it) with it
            migrate.upgrade(o { target = "b2" })
            assert.same({ "b1", "b2", "c1" }, sorted(migrate.downgrade(o { target = "c1@base" })))
            assert.same({ "a1" }, versions())
            assert.same({ "b1", "b2", "c1" }, sorted(migrate.upgrade(o { target = "b2" })))
            assert.same({ "a1", "b1", "b2" }, sorted(migrate.downgrade(o { target = "alpha@base" })))
            assert.same({ "c1" }, versions())
            -- a2 is not needed by b1
            assert.same({ "a1", "b1", "b2" }, sorted(migrate.upgrade(o { target = "b2" })))
            assert.same({ "a1", "b1", "b2", "c1" }, versions())
        end)

        it("reports revisions no file provides, and an explicit stamp or stamp --purge repairs them", function()
            local o = g(chain)
            migrate.upgrade(o { target = "b2" })
            assert(db:exec("INSERT INTO kronos_version (revision) VALUES ('gone1')"))
            local cur = migrate.current(o())
            assert.same({ "b2", "gone1" }, { cur[1], cur[2] })
            assert.same({ "gone1" }, cur.unknown)
            local h = migrate.history(o())
            assert.is_true(h[#h].unknown)
            assert.equal("gone1", h[#h].revision)
            assert.equal("unknown_revision", raises(function() migrate.upgrade(o()) end).code)
            assert.same({ "a1" }, migrate.stamp(o { target = "a1" }))
            assert.same({ "a1" }, versions())
            assert(db:exec("INSERT INTO kronos_version (revision) VALUES ('gone2')"))
            assert.same({ "c3" }, migrate.stamp(o { target = "c3", purge = true }))
            assert.same({ "a1", "b2", "c3" }, versions())
        end)
    end)

    describe("progress events", function()
        before_each(reset)

        it("step_start, step_done and commit, in order; op.x reaches the migration", function()
            local dir = graph { { "a1" }, { "b2", "a1", "up_x = true," } }
            local f = assert(io.open(dir .. "/003_c3.lua", "w"))
            f:write([[return { revision = "c3", down_revision = "b2", message = "x",
                up = function(op) op.execute("CREATE TABLE t_x (v text); INSERT INTO t_x VALUES ('" .. op.x.color .. "')") end,
                down = function(op) op.execute("DROP TABLE t_x") end }]])
            f:close()
            local evs = {}
            migrate.upgrade { dir = dir, db = db, x = { color = "blue" }, transaction_per_migration = true,
                on_event = function(ev) evs[#evs + 1] = ev end }
            assert.equal("blue", assert(db:exec("SELECT v FROM t_x"))[1].v)
            local kinds = {}
            for i, ev in ipairs(evs) do kinds[i] = ev.type .. ":" .. (ev.revision or table.concat(ev.revisions, ",")) end
            assert.same({ "step_start:a1", "step_done:a1", "commit:a1", "step_start:b2", "step_done:b2", "commit:b2",
                "step_start:c3", "step_done:c3", "commit:c3" }, kinds)
            assert.same({ "base", "upgrade", true }, { evs[1].from, evs[1].direction, evs[1].transactional })
            assert.equal("a1", evs[4].from)
            assert.is_true(evs[2].ms >= 0)
            evs = {}
            migrate.downgrade { dir = dir, db = db, target = "a1", on_event = function(ev) evs[#evs + 1] = ev end }
            assert.same({ "step_start", "c3", "b2", "downgrade" },
                { evs[1].type, evs[1].revision, evs[1].from, evs[1].direction })
            assert.same({ "c3", "b2" }, evs[#evs].revisions)
            os.execute(("rm -rf %q"):format(dir))
        end)

        it("a non-transactional step commits on its own, between the transactions around it", function()
            local evs = {}
            migrate.upgrade(opts("nontx", { on_event = function(ev)
                evs[#evs + 1] = ev.type .. ":" .. (ev.revision or table.concat(ev.revisions, ","))
                if ev.type == "step_start" then evs[#evs] = evs[#evs] .. (ev.transactional and "" or "(no tx)") end
            end }))
            assert.same({ "step_start:n1", "step_done:n1", "commit:n1", "step_start:n2(no tx)", "step_done:n2",
                "commit:n2", "step_start:n3", "step_done:n3", "commit:n3" }, evs)
            -- offline nothing runs and nothing commits: no events
            local sql = migrate.upgrade(opts("nontx", { sql = true, target = "base:n3",
                on_event = function() error("offline runs send no events") end }))
            assert.matches("upgrade n3", sql, 1, true)
        end)

        it("a failure says what was kept and what was rolled back", function()
            local err = raises(function() migrate.upgrade(opts("failing", { transaction_per_migration = true })) end)
            assert.same({ "f1" }, err.kept)
            assert.same({ "f2" }, err.rolled_back)
            reset()
            err = raises(function() migrate.upgrade(opts("failing")) end)
            assert.same({}, err.kept)
            assert.same({ "f1", "f2" }, err.rolled_back)
        end)

        it("a bad argument to an op helper names the helper and the migration's line", function()
            local dir = graph {}
            local f = assert(io.open(dir .. "/001_bad.lua", "w"))
            f:write('return { revision = "bad1",\n up = function(op)\n op.create_table("t", 42)\n end }\n')
            f:close()
            local err = raises(function() migrate.upgrade { dir = dir, db = db } end)
            assert.equal("bad_argument", err.code)
            assert.matches("create_table", err.message, 1, true)
            assert.matches("001_bad.lua:3:", err.message, 1, true)
            assert.not_matches("'?'", err.message, 1, true)
            f = assert(io.open(dir .. "/001_bad.lua", "w"))
            f:write('return { revision = "bad1", up = function(op) op.execute(42) end }\n')
            f:close()
            err = raises(function() migrate.upgrade { dir = dir, db = db } end)
            assert.equal("bad_argument", err.code)
            assert.matches("bad argument #1 to 'execute'", err.message, 1, true)
            f = assert(io.open(dir .. "/001_bad.lua", "w"))
            f:write('return { revision = "bad1", up = function(op) op.no_such_helper() end }\n')
            f:close()
            err = raises(function() migrate.upgrade { dir = dir, db = db } end)
            assert.equal("bad_migration", err.code)
            assert.matches("op.no_such_helper: no such DDL helper", err.message, 1, true)
            os.execute(("rm -rf %q"):format(dir))
        end)
    end)

    describe("statements sent together", function()
        before_each(reset)

        it("run in order, raw SQL and op.db included, and fail as they would one by one", function()
            local err = raises(function() migrate.upgrade(opts("batching")) end)
            assert.equal("42601", err.sqlstate)
            assert.equal(FIX .. "batching/002_split_quote.lua", err.file)
            assert.same({}, tables())
            assert.same({ "b1" }, migrate.upgrade(opts("batching", { target = "b1" })))
            local rows = assert(db:exec("SELECT n, note FROM b_log ORDER BY n"))
            assert.same({ "a;b", "back\\slash", "x'y", "seen 3" },
                { rows[1].note, rows[2].note, rows[3].note, rows[4].note })
            assert.equal(1, #assert(db:exec("SELECT 1 FROM pg_indexes WHERE tablename = 'b_log'")))
            local row = assert(db:exec("SELECT execution_ms FROM kronos_version"))[1]
            assert.is_true(row.execution_ms >= 0)
        end)
    end)

    describe("the version table", function()
        before_each(reset)

        it("records revision, message, checksum, applied_at and execution_ms", function()
            migrate.upgrade(opts("linear", { target = "aaa111" }))
            local row = assert(db:exec("SELECT * FROM kronos_version"))[1]
            assert.equal("aaa111", row.revision)
            assert.equal("create t1", row.message)
            local f = assert(io.open(FIX .. "linear/001_one.lua", "rb"))
            assert.equal(migrate.sha256(f:read("*a")), row.checksum)
            f:close()
            assert.equal(64, #row.checksum)
            assert.matches("^%d%d%d%d%-%d%d%-%d%dT", row.applied_at)
            assert.is_true(row.execution_ms >= 0)
            local h = migrate.history(opts("linear"))
            assert.is_true(h[1].applied and h[1].current)
            assert.equal(row.applied_at, h[1].applied_at)
            assert.is_false(h[2].applied)
        end)

        it("refuses changed files of applied migrations unless allow_changed", function()
            local dir = scratch("linear")
            migrate.upgrade { dir = dir, db = db, target = "bbb222" }
            local f = assert(io.open(dir .. "/001_one.lua", "a"))
            f:write("-- edited\n")
            f:close()
            local err = raises(function() migrate.upgrade { dir = dir, db = db } end)
            assert.equal("changed_migration", err.code)
            assert.equal(dir .. "/001_one.lua", err.file)
            assert.same({ "aaa111", "bbb222" }, versions())
            local ok, why = migrate.check { dir = dir, db = db }
            assert.is_false(ok)
            assert.same({ "aaa111" }, why.changed)
            assert.same({ "ccc333" }, migrate.upgrade { dir = dir, db = db, allow_changed = true })
            os.execute(("rm -rf %q"):format(dir))
        end)

        it("stamp sets the version without running migrations", function()
            assert.same({ "bbb222" }, migrate.stamp(opts("linear", { target = "bbb222" })))
            assert.same({ "aaa111", "bbb222" }, versions())
            assert.same({}, tables())
            local stamped = assert(db:exec("SELECT count(*) AS n FROM kronos_version WHERE execution_ms IS NULL"))
            assert.equal(2, stamped[1].n)
            assert.same({ "aaa111" }, migrate.stamp(opts("linear", { target = "aaa111" })))
            assert.same({ "aaa111" }, versions())
            assert.same({}, migrate.stamp(opts("linear", { target = "base" })))
            assert.same({}, versions())
        end)

        it("check is true only at head", function()
            local ok, why = migrate.check(opts("linear"))
            assert.is_false(ok)
            assert.same({ "aaa111", "bbb222", "ccc333" }, why.pending)
            migrate.upgrade(opts("linear"))
            assert.is_true((migrate.check(opts("linear"))))
            db:exec("INSERT INTO kronos_version (revision) VALUES ('ghost')")
            ok, why = migrate.check(opts("linear"))
            assert.is_false(ok)
            assert.same({ "ghost" }, why.unknown)
            assert.equal("unknown_revision", raises(function() migrate.upgrade(opts("linear")) end).code)
        end)

        it("takes another name", function()
            migrate.upgrade(opts("linear", { version_table = "my \"versions\"", target = "aaa111" }))
            assert.equal(1, #assert(db:exec('SELECT * FROM "my ""versions"""')))
            assert.same({ "aaa111" }, migrate.current(opts("linear", { version_table = "my \"versions\"" })))
            assert.same({}, migrate.current(opts("linear")))
        end)
    end)

    describe("locking", function()
        before_each(reset)

        it("says another process is migrating when lock_timeout runs out", function()
            local other = assert(kronos.connect(url))
            assert(other:exec("BEGIN"))
            assert(other:exec("SELECT pg_advisory_xact_lock(" .. migrate.lock_key("kronos_version") .. ")"))
            local err = raises(function() migrate.upgrade(opts("linear", { lock_timeout = 50 })) end)
            assert.equal("migration_locked", err.code)
            assert.equal("55P03", err.sqlstate)
            assert.matches("another process is migrating", err.message, 1, true)
            assert(other:exec("ROLLBACK"))
            other:close()
            assert.same({ "aaa111", "bbb222", "ccc333" }, migrate.upgrade(opts("linear", { lock_timeout = "5s" })))
        end)

        it("runs transactional = false migrations outside a transaction", function()
            local sql = migrate.upgrade(opts("nontx", { sql = true }))
            assert.matches("COMMIT;\nSET lock_timeout = '60s';\nSELECT pg_advisory_lock(", sql, 1, true)
            assert.matches("CREATE INDEX CONCURRENTLY", sql, 1, true)
            assert.same({ "n1", "n2", "n3" }, migrate.upgrade(opts("nontx")))
            local ix = assert(db:exec("SELECT indisvalid FROM pg_index WHERE indexrelid = 'ix_n_items_label'::regclass"))
            assert.is_true(ix[1].indisvalid)
            -- the session lock is given back
            local locks = assert(db:exec("SELECT count(*) AS n FROM pg_locks WHERE locktype = 'advisory'"))
            assert.equal(0, locks[1].n)
            assert.same({ "n3", "n2", "n1" }, migrate.downgrade(opts("nontx")))
            assert.same({}, tables())
        end)

        it("lets 8 processes upgrade a fresh database at once, each migration applied once", function()
            local cmd = {}
            for i = 1, 8 do
                cmd[i] = ("(%s %s/bin/kronos upgrade -d %q --dir %q >/dev/null 2>&1; echo \"rc$?\") &")
                    :format(H.lua, H.root, url, FIX .. "concurrent")
            end
            local code, out = H.run(table.concat(cmd, " ") .. " wait")
            assert.equal(0, code)
            local _, zeros = out:gsub("rc0", "")
            assert.equal(8, zeros, out)
            local runs = assert(db:exec("SELECT n FROM c_runs ORDER BY n"))
            assert.equal(2, #runs)
            assert.same({ "c1", "c2" }, versions())
        end)
    end)

    describe("revision", function()
        it("writes a migration on top of the head", function()
            local dir = scratch("linear")
            local path = migrate.revision { dir = dir, message = "Add a 'quoted' thing\nsecond line" }
            assert.matches("^" .. dir:gsub("%p", "%%%0") .. "/%x+_add_a_quoted_thing_second_line%.lua$", path)
            local m = dofile(path)
            assert.equal("ccc333", m.down_revision)
            assert.equal("Add a 'quoted' thing\nsecond line", m.message)
            assert.matches("^%x%x%x%x%x%x%x%x%x%x%x%x$", m.revision)
            assert.same({ m.revision }, migrate.heads { dir = dir })
            os.execute(("rm -rf %q"):format(dir))
            -- two heads: refused (as Alembic does); a merge names its parents
            dir = scratch("twoheads")
            local ok, err = pcall(migrate.revision, { dir = dir, message = "next" })
            assert.is_false(ok)
            assert.equal("multiple_heads", err.code)
            m = dofile(migrate.revision { dir = dir, message = "merge", revision = "merged",
                down_revision = { "left", "right" } })
            assert.same({ "left", "right" }, m.down_revision)
            assert.same({ "merged" }, migrate.heads { dir = dir })
            os.execute(("rm -rf %q"):format(dir))
        end)
    end)
end)
