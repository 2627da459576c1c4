-- Two-phase migrations (up, then finish once no old code runs) and lock retries, against the
-- real server: what upgrade, finish, check, current, history and downgrade do with a finish,
-- version tables made before finished_at existed, and a step whose lock wait runs out.
local H = require "spec.helper"
local kronos = require "kronos"
local migrate = require "kronos.migrate"

local USERS = H.root .. "/migrations/4f1c2a9e7b30_create_users_table.lua"

-- n2 renames first_name to given_name in two phases: up adds and backfills, finish drops.
local N2 = [[
return {
    revision = "n2", down_revision = "4f1c2a9e7b30", message = "given_name replaces first_name",
    up = function(op)
        op.add_column("users", { name = "given_name", type = "string(100)" })
        op.execute("UPDATE users SET given_name = first_name")
    end,
    finish = function(op) op.drop_column("users", "first_name") end,
    %s
    down = function(op) op.drop_column("users", "given_name") end,
}
]]
local UNFINISH = [[unfinish = function(op)
        op.add_column("users", { name = "first_name", type = "string(100)" })
        op.execute("UPDATE users SET first_name = given_name")
    end,]]

local cli = H.kronos

describe("deploys without downtime", function()
    local url, dbname, db, dir
    setup(function() url, dbname, db, dir = H.scratch("deploy") end)
    teardown(function() H.drop_scratch(dbname, db, dir) end)

    local function files(extra)
        H.sh("rm -f " .. H.shell_quote(dir) .. "/*.lua")
        H.sh(("cp %s %s/"):format(H.shell_quote(USERS), H.shell_quote(dir)))
        H.write_file(dir .. "/n2.lua", N2:format(extra or ""))
    end

    local function columns()
        local rows = assert(db:exec([[SELECT string_agg(attname, ',' ORDER BY attname) AS c FROM pg_attribute
            WHERE attrelid = 'users'::regclass AND attnum > 0 AND NOT attisdropped
              AND attname IN ('first_name', 'given_name')]]))
        return rows[1].c
    end

    local function has_finished_at()
        return assert(db:exec([[SELECT count(*) AS n FROM pg_attribute
            WHERE attrelid = 'kronos_version'::regclass AND attname = 'finished_at']]))[1].n == 1
    end

    local function reset()
        assert(db:script("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    end

    describe("two phases", function()
        it("upgrade runs up only; check passes with the finish pending; finish contracts and records it", function()
            reset()
            files(UNFINISH)
            assert.same({ "4f1c2a9e7b30", "n2" }, migrate.upgrade { db = db, dir = dir })
            assert.equal("first_name,given_name", columns()) -- old code still finds first_name
            -- the version table of this run has no finished_at yet: kronos of before reads it all the same
            assert.is_false(has_finished_at())
            local ok, why = migrate.check { db = db, dir = dir }
            assert.is_true(ok)
            assert.same({ "n2" }, why.finish_pending)
            local s = migrate.status { db = db, dir = dir }
            assert.same({ "n2" }, s.finish_pending)
            assert.same({ "n2" }, s.current)

            local code, out = cli(("check -d %q --dir %q"):format(url, dir))
            assert.equal(0, code, out)
            assert.equal("up to date (finish pending: n2)\n", out)
            code, out = cli(("current -d %q --dir %q"):format(url, dir))
            assert.equal(0, code)
            assert.equal("n2 (head)\nfinish pending: n2\n", out)
            code, out = cli(("history -d %q --dir %q"):format(url, dir))
            assert.equal(0, code)
            assert.matches("4f1c2a9e7b30 -> n2 (head, current, finish pending), given_name replaces first_name [applied",
                out, 1, true)
            assert.not_matches("create users table [^\n]*finish", out)

            -- finish, as the CLI runs it after the last old instance stopped
            code, out = cli(("finish -d %q --dir %q"):format(url, dir))
            assert.equal(0, code, out)
            assert.matches("^finish    n2 given_name replaces first_name %(%d+ ms%)\n$", out)
            assert.equal("given_name", columns())
            assert.is_true(has_finished_at())
            assert.is_true((migrate.check { db = db, dir = dir }))
            code, out = cli(("history -d %q --dir %q"):format(url, dir))
            assert.equal(0, code)
            assert.matches("(head, current, finished)", out, 1, true)
            local hist = migrate.history { db = db, dir = dir }
            assert.is_true(hist[2].finished)
            assert.is_false(hist[2].finish_pending)
            assert.matches("^%d%d%d%d%-", hist[2].finished_at)
            assert.is_nil(hist[1].finished) -- no finish function: no phase
            -- nothing left
            assert.same({}, migrate.finish { db = db, dir = dir })
            code, out = cli(("finish -d %q --dir %q"):format(url, dir))
            assert.equal(0, code)
            assert.equal("nothing to finish\n", out)

            -- downgrade of a finished migration: unfinish, then down
            assert.same({ "n2" }, migrate.downgrade { db = db, dir = dir, target = "4f1c2a9e7b30" })
            assert.equal("first_name", columns())
        end)

        it("a finished migration without unfinish is not downgraded; an unfinished one is", function()
            reset()
            files()
            migrate.upgrade { db = db, dir = dir }
            migrate.finish { db = db, dir = dir }
            local ok, err = pcall(migrate.downgrade, { db = db, dir = dir, target = "4f1c2a9e7b30" })
            assert.is_false(ok)
            assert.equal("finished_migration", err.code)
            assert.matches("revision 'n2' is finished: its finish changed the schema and it has no unfinish function",
                tostring(err), 1, true)
            assert.equal("given_name", columns()) -- nothing changed
            assert.same({ "n2" }, migrate.current { db = db, dir = dir })

            reset()
            migrate.upgrade { db = db, dir = dir }
            assert.same({ "n2" }, migrate.downgrade { db = db, dir = dir, target = "4f1c2a9e7b30" })
            assert.equal("first_name", columns())
        end)

        it("finish offline: the SQL adds finished_at first, then each finish and its record", function()
            files()
            local sql = migrate.finish { dir = dir, sql = true }
            assert.matches('ALTER TABLE "kronos_version" ADD COLUMN IF NOT EXISTS finished_at timestamptz;\n'
                .. "-- finish n2: given_name replaces first_name\n"
                .. "SELECT set_config('kronos.step', clock_timestamp()::text, true);\n"
                .. 'ALTER TABLE "users" DROP COLUMN "first_name";\n'
                .. "SELECT coalesce(nullif(current_setting('kronos.step', true), ''), "
                .. "'kronos: the transaction was ended inside it')::timestamptz;\n"
                .. "UPDATE \"kronos_version\" SET finished_at = clock_timestamp() WHERE revision = 'n2';\nCOMMIT;", sql, 1, true)
            -- from n2 on, its finish counts as run: nothing to do
            assert.not_matches("DROP COLUMN", migrate.finish { dir = dir, sql = true, target = "n2:heads" })
            -- and the script runs on a database that an upgrade made
            reset()
            migrate.upgrade { db = db, dir = dir }
            assert(db:script(sql))
            assert.equal("given_name", columns())
            assert.same({ true }, { migrate.check { db = db, dir = dir } }) -- finished: nothing pending
        end)
    end)

    describe("lock retries", function()
        local holder
        before_each(function()
            reset()
            H.sh("rm -f " .. H.shell_quote(dir) .. "/*.lua")
            H.sh(("cp %s %s/"):format(H.shell_quote(USERS), H.shell_quote(dir)))
            migrate.upgrade { db = db, dir = dir }
            H.write_file(dir .. "/a2.lua", [[return { revision = "a2", down_revision = "4f1c2a9e7b30", message = "other",
                up = function(op) op.create_table("other", { { name = "id", type = "integer" } }) end }]])
            H.write_file(dir .. "/n3.lua", [[return { revision = "n3", down_revision = "a2", message = "nickname",
                up = function(op) op.add_column("users", { name = "nickname", type = "text" }) end }]])
            holder = assert(kronos.connect { url = url, application_name = "busy-reader" })
            assert(holder:exec("BEGIN"))
            assert(holder:exec("SELECT count(*) FROM users")) -- ACCESS SHARE until COMMIT
        end)
        after_each(function() holder:close() end)

        it("a step that timed out is retried from the start of the run and succeeds once the holder lets go", function()
            local events = {}
            local applied = migrate.upgrade { db = db, dir = dir, lock_timeout = 50, retries = 10, on_event = function(ev)
                events[#events + 1] = ev.type .. ":" .. (ev.revision or "")
                if ev.type == "lock_retry" and ev.attempt == 2 then assert(holder:exec("COMMIT")) end
            end }
            assert.same({ "a2", "n3" }, applied)
            -- two tries timed out; each retry ran the whole run again (a2 was rolled back each time)
            local starts, retries = 0, 0
            for _, e in ipairs(events) do
                if e == "step_start:a2" then starts = starts + 1 end
                if e == "lock_retry:n3" then retries = retries + 1 end
            end
            assert.equal(2, retries)
            assert.equal(3, starts)
            assert.equal(1, #assert(db:exec("SELECT 1 FROM kronos_version WHERE revision = 'a2'")))
            assert.equal(1, #assert(db:exec(
                "SELECT 1 FROM pg_attribute WHERE attrelid = 'users'::regclass AND attname = 'nickname'")))
        end)

        it("with per-migration transactions the kept steps stay and the rest is retried", function()
            local starts = 0
            local applied = migrate.upgrade { db = db, dir = dir, lock_timeout = 50, retries = 5,
                transaction_per_migration = true, on_event = function(ev)
                    if ev.type == "step_start" and ev.revision == "a2" then starts = starts + 1 end
                    if ev.type == "lock_retry" then assert(holder:exec("COMMIT")) end
                end }
            assert.same({ "a2", "n3" }, applied)
            assert.equal(1, starts)
        end)

        it("gives up after the retries, naming the table and the session that held it", function()
            local pid = holder:backend_pid()
            local code, out, err = cli(("upgrade -d %q --dir %q --lock-timeout 50ms --retries 2"):format(url, dir))
            assert.equal(1, code, out)
            assert.matches("n3%.lua: upgrade of revision 'n3' failed: canceling statement due to lock timeout "
                .. "%(after 2 retries%); "
                .. 'table "users" is locked %(AccessShareLock%) by pid ' .. pid .. ' %(application_name "busy%-reader"%), '
                .. "idle in transaction for %d+ s %[lock_not_available 55P03%]", err)
            local ok, e = pcall(migrate.upgrade, { db = db, dir = dir, lock_timeout = 50, retries = 1 })
            assert.is_false(ok)
            assert.equal("lock_not_available", e.code)
            assert.equal("users", e.table)
            assert.equal(pid, e.holder.pid)
            assert.equal("busy-reader", e.holder.application_name)
            assert.equal(1, e.retries)
            -- nothing of the run was kept
            assert.equal(0, #assert(db:exec("SELECT 1 FROM kronos_version WHERE revision IN ('a2', 'n3')")))
            assert.is_nil(assert(db:exec("SELECT to_regclass('other') AS t"))[1].t)
            -- a bad retries option is refused
            ok, e = pcall(migrate.upgrade, { db = db, dir = dir, lock_timeout = 50, retries = -1 })
            assert.is_false(ok)
            assert.equal("bad_argument", e.code)
        end)
    end)
end)
