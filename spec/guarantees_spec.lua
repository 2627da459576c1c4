-- Promises that code inside kronos's transactions and scripts cannot break behind its back:
-- conn:transaction when fn ends the transaction itself, a migration whose SQL runs COMMIT or
-- ROLLBACK inside the one-transaction run, and the offline script (a trailing -- comment, work
-- done through op.db). Each against the real server.
local kronos = require "kronos"
local migrate = require "kronos.migrate"
local H = require "spec.helper"

local write = H.write_file

-- A migration file from its parts; up and down are Lua source using op.
local function migration(dir, file, rev, down, up, down_body, extra)
    write(dir .. "/" .. file, ([[
return {
    revision = %q,
    down_revision = %s,
    message = %q,
    up = function(op)
%s
    end,
    down = function(op)
%s
    end,%s
}
]]):format(rev, down and ("%q"):format(down) or "nil", "guarantee " .. rev, up, down_body or "", extra or ""))
end

local function column(db, sql, name, ...)
    local out = {}
    for i, r in ipairs(assert(db:exec(sql, ...))) do out[i] = r[name] end
    return out
end

local function psql_file(url, sql, single)
    local path = os.tmpname()
    write(path, sql)
    local code, out = H.run(("psql -X -q %s -v ON_ERROR_STOP=1 -d %s -f %s"):format(single and "-1" or "",
        H.shell_quote(url), H.shell_quote(path)))
    os.remove(path)
    return code, out
end

describe("guarantees", function()
    local url, dbname, db, dir

    setup(function()
        url, dbname = H.fresh_db("guarantees")
        db = assert(kronos.connect(url))
    end)

    teardown(function()
        db:close()
        H.drop_db(dbname)
    end)

    before_each(function()
        assert(db:script("DROP SCHEMA public CASCADE; CREATE SCHEMA public; CREATE TABLE item (id int)"))
        dir = H.tmpdir("guarantees")
    end)

    after_each(function()
        os.execute("rm -rf " .. H.shell_quote(dir))
    end)

    local function items() return column(db, "SELECT id FROM item ORDER BY id", "id") end

    describe("conn:transaction when fn ends the transaction itself", function()
        it("ROLLBACK then more writes: the writes are refused and transaction fails", function()
            local inner_err
            local r, err = db:transaction(function(c)
                assert(c:exec("INSERT INTO item VALUES (1)"))
                assert(c:exec("ROLLBACK"))
                local ok, e = c:exec("INSERT INTO item VALUES (2)")
                assert.is_nil(ok)
                inner_err = e
                return "done"
            end)
            assert.is_nil(r)
            assert.are.equal("transaction_ended", err.code)
            assert.matches("ended the transaction itself", tostring(err), 1, true)
            assert.are.equal("transaction_ended", inner_err.code)
            assert.is_false(db:in_transaction())
            assert.are.same({}, items()) -- nothing was autocommitted
            -- the connection works as before afterwards
            assert.are.equal(7, db:transaction(function(c)
                assert(c:exec("INSERT INTO item VALUES (7)"))
                return 7
            end))
            assert.are.same({ 7 }, items())
        end)

        it("COMMIT in the middle of a script: transaction fails instead of reporting success", function()
            local r, err = db:transaction(function(c)
                assert(c:script("INSERT INTO item VALUES (1); COMMIT; INSERT INTO item VALUES (2)"))
                return true
            end)
            assert.is_nil(r)
            assert.are.equal("transaction_ended", err.code)
            assert.is_false(db:in_transaction())
        end)

        it("ROLLBACK and a new BEGIN: the BEGIN is refused, nothing stays open or committed", function()
            local r, err = db:transaction(function(c)
                assert(c:exec("INSERT INTO item VALUES (1)"))
                assert(c:exec("ROLLBACK"))
                local ok, e = c:exec("BEGIN")
                assert.is_nil(ok)
                assert.are.equal("transaction_ended", e.code)
                -- rows() and the users model refuse as well
                assert.has_error(function() for _ in c:rows("SELECT 1") do end end)
                return true
            end)
            assert.is_nil(r)
            assert.are.equal("transaction_ended", err.code)
            assert.is_false(db:in_transaction())
            assert.are.same({}, items())
        end)

        it("ROLLBACK and BEGIN in one script: the new transaction is not committed, transaction fails", function()
            assert(db:exec("INSERT INTO item VALUES (1)"))
            local r, err = db:transaction(function(c)
                assert(c:exec("INSERT INTO item VALUES (2)"))
                assert(c:script("ROLLBACK; BEGIN; INSERT INTO item VALUES (3)"))
                assert(c:exec("INSERT INTO item VALUES (4)"))
                return "ok"
            end)
            assert.is_nil(r)
            assert.are.equal("transaction_ended", err.code)
            assert.is_false(db:in_transaction())
            assert.are.same({ 1 }, items()) -- 2 rolled back by fn's ROLLBACK, 3 and 4 by kronos
            -- nested: the savepoint is gone with the transaction; inner and outer fail
            local inner_err
            r, err = db:transaction(function(c)
                assert(c:exec("INSERT INTO item VALUES (5)"))
                local ok, e = c:transaction(function(c2)
                    assert(c2:script("ROLLBACK; BEGIN; INSERT INTO item VALUES (6)"))
                end)
                assert.is_nil(ok)
                inner_err = e
                return "ok"
            end)
            assert.is_nil(r)
            assert.are.equal("transaction_ended", inner_err.code)
            assert.are.equal("transaction_ended", err.code)
            assert.is_false(db:in_transaction())
            assert.are.same({ 1 }, items())
            -- and an ordinary transaction still commits
            assert.are.equal(8, db:transaction(function(c) assert(c:exec("INSERT INTO item VALUES (8)")); return 8 end))
            assert.are.same({ 1, 8 }, items())
        end)

        it("a ROLLBACK inside a savepoint fails the inner and the outer transaction", function()
            local inner_r, inner_err
            local r, err = db:transaction(function(c)
                assert(c:exec("INSERT INTO item VALUES (1)"))
                inner_r, inner_err = c:transaction(function(c2)
                    assert(c2:exec("ROLLBACK"))
                end)
                local ok = c:exec("INSERT INTO item VALUES (2)")
                assert.is_nil(ok)
                return true
            end)
            assert.is_nil(inner_r)
            assert.are.equal("transaction_ended", inner_err.code)
            assert.is_nil(r)
            assert.are.equal("transaction_ended", err.code)
            assert.is_false(db:in_transaction())
            assert.are.same({}, items())
        end)

        it("a COMMIT of a transaction begun by hand, from inside its savepoint, fails", function()
            assert(db:exec("BEGIN"))
            local r, err = db:transaction(function(c)
                assert(c:exec("INSERT INTO item VALUES (1)"))
                assert(c:exec("COMMIT"))
            end)
            assert.is_nil(r)
            assert.are.equal("transaction_ended", err.code)
            assert.is_false(db:in_transaction())
            -- the work before the COMMIT was committed by the caller's own statement; nothing after
            assert.are.same({ 1 }, items())
            assert(db:exec("SELECT 1")) -- the flag does not outlive the call
        end)
    end)

    describe("a migration's SQL that ends the one-transaction run", function()
        local function versions()
            if not assert(db:exec("SELECT to_regclass('kronos_version') AS t"))[1].t then return {} end
            return column(db, "SELECT revision FROM kronos_version ORDER BY revision", "revision")
        end
        local function locks()
            return assert(db:exec("SELECT count(*) AS n FROM pg_locks WHERE locktype = 'advisory'"))[1].n
        end
        local function three(third)
            migration(dir, "s1.lua", "s1", nil, '        op.create_table("t1", {{ name = "id", type = "integer" }})')
            migration(dir, "s2.lua", "s2", "s1", '        op.execute("INSERT INTO item VALUES (2)")')
            migration(dir, "s3.lua", "s3", "s2", third)
        end
        local function fails(code, opts)
            local ok, err = pcall(migrate.upgrade, opts or { db = db, dir = dir })
            assert.is_false(ok)
            assert.are.equal(code, err.code, tostring(err))
            assert.are.equal("s3", err.revision)
            assert.matches("s3%.lua$", err.file)
            assert.matches("s3.lua: upgrade of revision 's3' failed", tostring(err), 1, true)
            return err
        end

        it("COMMIT or ROLLBACK in op.execute is refused before anything of it runs", function()
            three('        op.execute("ROLLBACK; CREATE TABLE tb (x int)")')
            local err = fails("transaction_control")
            assert.matches("ROLLBACK would end the migration's transaction", tostring(err), 1, true)
            assert.are.same({}, versions())                -- nothing recorded
            assert.are.same({}, items())                   -- s2's work rolled back with the run
            assert.is_nil(assert(db:exec("SELECT to_regclass('tb') AS t"))[1].t)
            assert.is_nil(assert(db:exec("SELECT to_regclass('t1') AS t"))[1].t)
            assert.are.equal(0, locks())
            assert.is_false(db:in_transaction())
            -- offline too: the script would break psql -1 the same way
            fails("transaction_control", { dir = dir, sql = true })
            for _, sql in ipairs { "COMMIT", "end", "abort work", "start transaction", "Begin", "PREPARE TRANSACTION 'x'",
                "SELECT 1; /* c */ rollback", "SELECT 1;\n-- c\nCOMMIT AND CHAIN" } do
                three(("        op.execute(%q)"):format(sql))
                fails("transaction_control")
                assert.are.same({}, versions())
            end
        end)

        it("what is not transaction control passes: a DO block, ROLLBACK TO a savepoint, words in strings", function()
            three([[
        op.execute("DO $$ BEGIN PERFORM 1; END $$")
        op.execute("SAVEPOINT s; INSERT INTO item VALUES (30); ROLLBACK TO SAVEPOINT s")
        op.execute("SAVEPOINT s2; INSERT INTO item VALUES (31); ROLLBACK WORK TO s2")
        op.execute("INSERT INTO item SELECT length('COMMIT; ROLLBACK') -- ROLLBACK\n")
        op.execute("SELECT 1 AS \"begin\"; PREPARE p AS SELECT 1; DEALLOCATE p")]])
            assert.are.same({ "s1", "s2", "s3" }, migrate.upgrade({ db = db, dir = dir }))
            assert.are.same({ 2, 16 }, items())
        end)

        it("a COMMIT or ROLLBACK the scan cannot see is caught after it ran, naming the step", function()
            -- a backslash in a string makes the text doubtful: it runs, and the ROLLBACK is seen afterwards
            three([[        op.execute("SELECT E'a\\nb'; ROLLBACK; CREATE TABLE tb (x int)")]])
            local err = fails("transaction_ended")
            assert.matches("ended the migration's transaction", tostring(err), 1, true)
            assert.are.same({}, versions())                -- nothing recorded for the rolled-back work
            assert.are.same({}, items())
            assert.is_false(db:in_transaction())
            assert.are.equal(0, locks())
            assert(db:exec("DROP TABLE IF EXISTS tb"))
            -- through op.db: the statements after it are refused, the step fails
            three([[
        assert(op.db:exec("ROLLBACK"))
        op.execute("INSERT INTO item VALUES (3)")]])
            fails("transaction_ended")
            assert.are.same({}, versions())
            assert.are.same({}, items())
            assert.are.equal(0, locks())
        end)

        it("a COMMIT it cannot see commits what came before; the step itself is not recorded", function()
            three([[        op.execute("SELECT E'a\\nb'; COMMIT; CREATE TABLE tb (x int)")]])
            local err = fails("transaction_ended")
            -- s1 and s2 were committed by the migration's COMMIT, with their version rows; s3 is
            -- not recorded (its row comes last, never before its work)
            assert.are.same({ "s1", "s2" }, versions())
            assert.are.same({ 2 }, items())
            assert.are.same({ "s1", "s2", "s3" }, err.ended)
            assert.are.same({}, err.rolled_back)
            assert.is_false(db:in_transaction())
            assert.are.equal(0, locks())
            -- the command line says what it cannot know, and reads where the database stands
            assert(db:script("DROP SCHEMA public CASCADE; CREATE SCHEMA public; CREATE TABLE item (id int)"))
            local code, out = H.kronos(("upgrade -d %s --dir %s"):format(H.shell_quote(url), H.shell_quote(dir)))
            assert.are.equal(1, code)
            assert.matches("committed or rolled back by the migration's own COMMIT or ROLLBACK: s1, s2, s3", out, 1, true)
            assert.matches("the database is now at s2\n", out, 1, true)
            -- through op.db, the same
            assert(db:script("DROP SCHEMA public CASCADE; CREATE SCHEMA public; CREATE TABLE item (id int)"))
            three([[
        assert(op.db:exec("COMMIT"))
        op.execute("INSERT INTO item VALUES (3)")]])
            fails("transaction_ended")
            assert.are.same({ "s1", "s2" }, versions())
            assert.are.same({ 2 }, items())
            assert.are.equal(0, locks())
        end)

        it("a ROLLBACK and a new BEGIN it cannot see: the step's guard fails it, nothing is recorded", function()
            three([[        op.execute("SELECT E'a\\nb'; ROLLBACK; BEGIN; CREATE TABLE tb (x int)")]])
            local err = fails("transaction_ended")
            assert.are.same({}, versions())
            assert.are.same({}, items())
            assert.is_nil(assert(db:exec("SELECT to_regclass('tb') AS t"))[1].t) -- the new transaction rolled back
            assert.is_false(db:in_transaction())
            assert.are.equal(0, locks())
            assert.are.same({ "s1", "s2", "s3" }, err.ended)
            -- a downgrade step is guarded the same way: its version row stays
            three('        op.execute("INSERT INTO item VALUES (3)")')
            assert.are.same({ "s1", "s2", "s3" }, migrate.upgrade({ db = db, dir = dir }))
            migration(dir, "s3.lua", "s3", "s2", '        op.execute("INSERT INTO item VALUES (3)")',
                [[        op.execute("SELECT E'a\\nb'; ROLLBACK; BEGIN; DELETE FROM item")]])
            local ok, derr = pcall(migrate.downgrade, { db = db, dir = dir, target = "s2", allow_changed = true })
            assert.is_false(ok)
            assert.are.equal("transaction_ended", derr.code, tostring(derr))
            assert.are.same({ "s1", "s2", "s3" }, versions())
            assert.are.same({ 2, 3 }, items())
            assert.are.equal(0, locks())
        end)

        it("a transactional = false migration manages its own transactions", function()
            three('        op.execute("BEGIN; INSERT INTO item VALUES (3); COMMIT")')
            local src = H.read_file(dir .. "/s3.lua"):gsub("    end,\n}", "    end,\n    transactional = false,\n}")
            write(dir .. "/s3.lua", src)
            assert.are.same({ "s1", "s2", "s3" }, migrate.upgrade({ db = db, dir = dir }))
            assert.are.same({ 2, 3 }, items())
        end)
    end)

    describe("offline SQL", function()
        it("a statement ending in a -- comment keeps its terminator: psql -1 runs what the online run does", function()
            migration(dir, "c1.lua", "c1", nil, [[
        op.execute("INSERT INTO item VALUES (1), (2), (3)")
        op.execute("SELECT 1 -- sanity check")
        op.execute("DELETE FROM item WHERE id = 2")
        op.execute("SELECT 'a -- not a comment' AS s")
        op.execute("DELETE FROM item WHERE id = 3 -- the last one;")]])
            local sql, offline = migrate.upgrade({ dir = dir, sql = true })
            assert.matches("SELECT 1 -- sanity check\n;\n", sql, 1, true)
            assert.matches("SELECT 'a -- not a comment' AS s;\n", sql, 1, true)
            -- online, on a copy of the same database
            local online = {}
            assert.are.same({ "c1" }, migrate.upgrade({ db = db, dir = dir, echo = function(s) online[#online + 1] = s end }))
            assert.are.same(offline, online)
            assert.are.same({ 1 }, items())
            local url2, name2 = H.fresh_db("guarantees_sql")
            local db2 = assert(kronos.connect(url2))
            assert(db2:exec("CREATE TABLE item (id int)"))
            local code, out = psql_file(url2, sql, true)
            assert.are.equal(0, code, out)
            assert.are.same({ 1 }, column(db2, "SELECT id FROM item ORDER BY id", "id"))
            assert.are.same({ "c1" }, column(db2, "SELECT revision FROM kronos_version", "revision"))
            db2:close()
            H.drop_db(name2)
        end)

        it("a migration reading op.db leaves a visible mark; an unguarded use fails naming the file", function()
            migration(dir, "d1.lua", "d1", nil, [[
        op.execute("INSERT INTO item VALUES (1)")
        if op.db then
            assert(op.db:exec("INSERT INTO item SELECT g FROM generate_series(2, 5) g"))
        end
        if op.db then op.db:exec("SELECT 1") end]])
            local sql = migrate.upgrade({ dir = dir, sql = true })
            local _, marks = sql:gsub("%-%- [^\n]*d1%.lua: revision d1 reads op%.db, which is nil offline: the database "
                .. "work it does through op%.db is NOT in this script\n", "")
            assert.are.equal(1, marks, sql) -- once per migration, however often it reads op.db
            assert.matches("INSERT INTO item VALUES (1);", sql, 1, true)
            -- online the same migration does all of its work
            assert.are.same({ "d1" }, migrate.upgrade({ db = db, dir = dir }))
            assert.are.same({ 1, 2, 3, 4, 5 }, items())
            -- unguarded: offline it fails, naming the file and the revision
            migration(dir, "d2.lua", "d2", "d1", [[
        op.db:exec("DELETE FROM item")]])
            local ok, err = pcall(migrate.upgrade, { dir = dir, sql = true })
            assert.is_false(ok)
            assert.are.equal("migration_failed", err.code)
            assert.matches("d2%.lua$", err.file)
            assert.are.equal("d2", err.revision)
            assert.matches("d2.lua: upgrade of revision 'd2' failed", tostring(err), 1, true)
        end)
    end)
end)
