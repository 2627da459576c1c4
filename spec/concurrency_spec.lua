-- Several kronos processes at once on one database: `kronos createdb` racing to create it, and
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

local migrate = require "kronos.migrate"

-- Polls fn until it returns a true value; the bound only keeps a broken run from hanging.
local function wait_for(what, fn)
    for _ = 1, 1200 do
        local v = fn()
        if v then return v end
        os.execute("sleep 0.025")
    end
    error("timed out waiting for " .. what)
end

-- r1: a table with rows (its up blocks on the FIFO named by $KRONOS_GATE, when set);
-- r2: transactional = false, CREATE INDEX CONCURRENTLY; r3: an ordinary step after it.
local function cic_chain(dir)
    H.write_file(dir .. "/r1.lua", [[
return {
    revision = "r1", message = "a table",
    up = function(op)
        op.create_table("items", { { name = "id", type = "integer" }, { name = "label", type = "text" } })
        op.execute("INSERT INTO items SELECT g, 'label ' || g FROM generate_series(1, 2000) g")
        local gate = os.getenv("KRONOS_GATE")
        if gate and op.db then io.open(gate, "r"):read("a") end -- op.db: the real run, not the lint
    end,
    down = function(op) op.drop_table("items") end,
}
]])
    H.write_file(dir .. "/r2.lua", [[
return {
    revision = "r2", down_revision = "r1", message = "an index built concurrently", transactional = false,
    up = function(op) op.create_index("ix_items_label", "items", { "label" }, { concurrently = true }) end,
    down = function(op) op.drop_index("ix_items_label", { concurrently = true }) end,
}
]])
    H.write_file(dir .. "/r3.lua", [[
return {
    revision = "r3", down_revision = "r2", message = "after the index",
    up = function(op) op.add_column("items", { name = "note", type = "text" }) end,
    down = function(op) op.drop_column("items", "note") end,
}
]])
end

-- Lets the process blocked on the FIFO go on (opening it read-write never blocks), and removes
-- it, so that a process that has not reached it yet fails instead of hanging.
local function open_gate(gate)
    local f = io.open(gate, "r+")
    if f then f:close() end
    os.remove(gate)
end

describe("concurrency", function()
    local url, dbname, dir, admin

    before_each(function()
        url, dbname = H.fresh_db("conc")
        dir = H.tmpdir("conc")
        cic_chain(dir)
        admin = assert(kronos.connect(url))
    end)

    after_each(function()
        open_gate(dir .. "/gate")
        admin:close()
        H.drop_db(dbname)
        os.execute("rm -rf " .. H.shell_quote(dir))
    end)

    -- The sessions of application app that have tried the lock at least once (they poll).
    local function polling(app)
        return assert(admin:exec([[SELECT count(*) AS n FROM pg_stat_activity WHERE application_name = $1
            AND (query LIKE '%pg_try_advisory%' OR query LIKE '%pg_locks%' OR query = 'ROLLBACK')]], app))[1].n
    end

    local function holder_inside_r1(app)
        wait_for("the first process inside r1, holding the lock", function()
            return assert(admin:exec([[SELECT count(*) AS n FROM pg_stat_activity a JOIN pg_locks l ON l.pid = a.pid
                WHERE a.application_name = $1 AND a.state = 'idle in transaction'
                  AND l.locktype = 'advisory' AND l.granted]], app))[1].n == 1
        end)
    end

    it("four `kronos upgrade` at once through a CREATE INDEX CONCURRENTLY: all exit 0, each step once", function()
        local gate = dir .. "/gate"
        assert(os.execute("mkfifo " .. H.shell_quote(gate)))
        local app = "kronos-conc-" .. kronos.uuid():sub(1, 8)
        local function args(name)
            return ("upgrade -d %s --dir %s"):format(H.shell_quote(url .. "?application_name=" .. name), H.shell_quote(dir))
        end
        -- the first holds the lock inside r1 until the gate opens; the others start meanwhile and wait
        local procs = { spawn(args(app .. "-first"), "KRONOS_GATE=" .. H.shell_quote(gate)) }
        holder_inside_r1(app .. "-first")
        for i = 2, 4 do procs[i] = spawn(args(app)) end
        wait_for("three processes polling the lock", function() return polling(app) == 3 end)
        open_gate(gate) -- r1 commits, then r2 builds its index while the others poll
        local ran = {}
        for i = 1, 4 do
            local code, out = procs[i].finish()
            assert.are.equal(0, code, out)
            for rev in out:gmatch("upgrade [^\n]* %-> (r%d), ") do ran[#ran + 1] = rev end
        end
        table.sort(ran)
        assert.are.same({ "r1", "r2", "r3" }, ran) -- each step ran in exactly one process
        local rows = assert(admin:exec("SELECT revision FROM kronos_version ORDER BY revision"))
        assert.are.same({ "r1", "r2", "r3" }, { rows[1].revision, rows[2].revision, rows[3].revision })
        assert.are.equal(3, #rows)
        local ix = assert(admin:exec([[SELECT indisvalid FROM pg_index WHERE indexrelid = 'ix_items_label'::regclass]]))
        assert.is_true(ix[1].indisvalid)
        assert.are.equal(0, assert(admin:exec([[SELECT count(*) AS n FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
            WHERE NOT i.indisvalid]]))[1].n)
        assert.are.equal(0, assert(admin:exec("SELECT count(*) AS n FROM pg_locks WHERE locktype = 'advisory'"))[1].n)
    end)

    it("four `kronos upgrade` started together on the chain: all exit 0, each step once, no INVALID index", function()
        local procs = {}
        for i = 1, 4 do procs[i] = spawn(("upgrade -d %s --dir %s"):format(H.shell_quote(url), H.shell_quote(dir))) end
        local ran = {}
        for i = 1, 4 do
            local code, out = procs[i].finish()
            assert.are.equal(0, code, out)
            for rev in out:gmatch("upgrade [^\n]* %-> (r%d), ") do ran[#ran + 1] = rev end
        end
        table.sort(ran)
        assert.are.same({ "r1", "r2", "r3" }, ran)
        assert.are.equal(3, assert(admin:exec("SELECT count(*) AS n FROM kronos_version"))[1].n)
        assert.are.equal(0, assert(admin:exec([[SELECT count(*) AS n FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
            WHERE NOT i.indisvalid]]))[1].n)
        local n = assert(admin:exec([[SELECT count(*) AS n FROM pg_indexes WHERE indexname = 'ix_items_label']]))[1].n
        assert.are.equal(1, n)
    end)

    it("a waiter reports lock_wait once, with the holder, and times out as migration_locked", function()
        local gate = dir .. "/gate"
        assert(os.execute("mkfifo " .. H.shell_quote(gate)))
        local app = "kronos-holder-" .. kronos.uuid():sub(1, 8)
        local holder = spawn(("upgrade -d %s --dir %s"):format(H.shell_quote(url .. "?application_name=" .. app),
            H.shell_quote(dir)), "KRONOS_GATE=" .. H.shell_quote(gate))
        holder_inside_r1(app)
        local pid = assert(admin:exec("SELECT pid FROM pg_stat_activity WHERE application_name = $1", app))[1].pid
        local events = {}
        local ok, err = pcall(migrate.upgrade, { url = url, dir = dir, lock_timeout = 300,
            on_event = function(ev) events[#events + 1] = ev end })
        assert.is_false(ok)
        assert.are.equal("migration_locked", err.code)
        assert.are.equal("55P03", err.sqlstate)
        local waits = {}
        for _, ev in ipairs(events) do if ev.type == "lock_wait" then waits[#waits + 1] = ev end end
        assert.are.equal(1, #waits)
        assert.are.equal(pid, waits[1].holder_pid)
        assert.are.equal(app, waits[1].holder_application_name)
        assert.is_true(waits[1].held_seconds >= 0 and waits[1].held_seconds < 600)
        -- nothing of the waiter stays: no transaction, no lock, and the holder finishes
        open_gate(gate)
        local code, out = holder.finish()
        assert.are.equal(0, code, out)
        assert.are.same({ "r3" }, migrate.current({ url = url, dir = dir }))
    end)

    describe("a non-transactional step cut short", function()
        -- holds a row lock's transaction on items: CREATE INDEX CONCURRENTLY waits for it, INVALID
        local function block_items()
            local blocker = assert(kronos.connect(url))
            assert(blocker:exec("BEGIN"))
            assert(blocker:exec("INSERT INTO items VALUES (0, 'blocker')"))
            return blocker
        end
        local function building(app)
            return wait_for("the index build waiting", function()
                local r = assert(admin:exec([[SELECT pid FROM pg_stat_activity WHERE application_name = $1
                    AND query LIKE 'CREATE INDEX CONCURRENTLY%' AND wait_event_type = 'Lock']], app))
                return r[1] and r[1].pid
            end)
        end
        local function index_valid()
            local r = assert(admin:exec([[SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass('ix_items_label')]]))
            if r[1] == nil then return nil end
            return r[1].indisvalid
        end
        local function revisions()
            local out = {}
            for i, r in ipairs(assert(admin:exec("SELECT revision FROM kronos_version ORDER BY 1"))) do out[i] = r.revision end
            return out
        end
        local function up(name)
            local target = H.shell_quote(url .. "?application_name=" .. name)
            return spawn(("upgrade -d %s --dir %s"):format(target, H.shell_quote(dir)))
        end

        it("terminated during CREATE INDEX CONCURRENTLY: the INVALID index is dropped and rebuilt", function()
            assert.are.same({ "r1" }, migrate.upgrade({ url = url, dir = dir, target = "r1" }))
            local app = "kronos-cut-" .. kronos.uuid():sub(1, 8)
            local blocker = block_items()
            local proc = up(app)
            local pid = building(app)
            assert(admin:exec("SELECT pg_terminate_backend($1)", pid))
            local code, out = proc.finish()
            assert.are.equal(1, code, out)
            assert(blocker:exec("ROLLBACK"))
            blocker:close()
            assert.is_false(index_valid())          -- what the kill left: an INVALID index, no row
            assert.are.same({ "r1" }, revisions())
            code, out = up(app).finish()
            assert.are.equal(0, code, out)
            assert.not_matches("already exists", out, 1, true)
            assert.is_true(index_valid())
            assert.are.same({ "r1", "r2", "r3" }, revisions())
            assert.is_nil(assert(admin:exec("SELECT obj_description('kronos_version'::regclass, 'pg_class') AS m"))[1].m)
        end)

        it("the client killed (SIGKILL) while the build went on to finish: the valid index is kept, the row written", function()
            assert.are.same({ "r1" }, migrate.upgrade({ url = url, dir = dir, target = "r1" }))
            local app = "kronos-kill-" .. kronos.uuid():sub(1, 8)
            local blocker = block_items()
            local pidfile = dir .. "/client.pid"
            local p = io.popen(("sh -c 'echo $$ > %s; exec %s %s/bin/kronos upgrade -d %s --dir %s' >/dev/null 2>&1"):format(
                pidfile, H.lua, H.shell_quote(H.root), H.shell_quote(url .. "?application_name=" .. app), H.shell_quote(dir)))
            building(app)
            assert(os.execute("kill -KILL " .. H.sh("cat " .. H.shell_quote(pidfile))))
            p:close()
            assert(blocker:exec("ROLLBACK")) -- the server finishes the build for a client that is gone
            blocker:close()
            wait_for("the orphaned build to end", function()
                local r = assert(admin:exec("SELECT count(*) AS n FROM pg_stat_activity WHERE application_name = $1", app))
                return r[1].n == 0
            end)
            assert.is_true(index_valid())
            assert.are.same({ "r1" }, revisions())
            local code, out = up(app).finish()
            assert.are.equal(0, code, out)
            assert.is_true(index_valid())
            assert.are.same({ "r1", "r2", "r3" }, revisions())
        end)

        local function marker()
            return assert(admin:exec("SELECT obj_description('kronos_version'::regclass, 'pg_class') AS m"))[1].m
        end
        -- the pid of application app's session once its statement like `like` waits for a lock
        local function waiting(app, like)
            return wait_for("a statement waiting: " .. like, function()
                local r = assert(admin:exec([[SELECT pid FROM pg_stat_activity WHERE application_name = $1
                    AND query LIKE $2 AND wait_event_type = 'Lock']], app, like))
                return r[1] and r[1].pid
            end)
        end

        it("terminated before its index existed (waiting for the table's lock): the next run builds it", function()
            assert.are.same({ "r1" }, migrate.upgrade({ url = url, dir = dir, target = "r1" }))
            local app = "kronos-early-" .. kronos.uuid():sub(1, 8)
            local blocker = assert(kronos.connect(url))
            assert(blocker:exec("BEGIN"))
            assert(blocker:exec("LOCK TABLE items IN ACCESS EXCLUSIVE MODE"))
            local proc = up(app)
            assert(admin:exec("SELECT pg_terminate_backend($1)", building(app)))
            assert.are.equal(1, (proc.finish()))
            assert(blocker:exec("ROLLBACK"))
            blocker:close()
            assert.is_nil(index_valid())                  -- no index at all, no row, the mark set
            assert.are.same({ "r1" }, revisions())
            assert.are.equal("kronos: running upgrade of r2", marker())
            local code, out = up(app).finish()
            assert.are.equal(0, code, out)
            assert.is_true(index_valid())
            assert.are.same({ "r1", "r2", "r3" }, revisions())
            assert.is_nil(marker())
        end)

        it("terminated after its version row, before the mark was cleared: done; the mark goes", function()
            assert.are.same({ "r1" }, migrate.upgrade({ url = url, dir = dir, target = "r1" }))
            local app = "kronos-late-" .. kronos.uuid():sub(1, 8)
            local blocker = block_items()
            local proc = up(app)
            building(app)
            -- the row's INSERT may pass, the COMMENT that clears the mark may not
            local holder = assert(kronos.connect(url))
            assert(holder:exec("BEGIN"))
            assert(holder:exec("LOCK TABLE kronos_version IN SHARE UPDATE EXCLUSIVE MODE"))
            assert(blocker:exec("ROLLBACK"))
            blocker:close()
            assert(admin:exec("SELECT pg_terminate_backend($1)", waiting(app, "COMMENT ON TABLE%")))
            assert.are.equal(1, (proc.finish()))
            assert(holder:exec("ROLLBACK"))
            holder:close()
            assert.is_true(index_valid())
            assert.are.same({ "r1", "r2" }, revisions())
            assert.are.equal("kronos: running upgrade of r2", marker())
            local code, out = up(app).finish()
            assert.are.equal(0, code, out)
            assert.not_matches("interrupted", out, 1, true)
            assert.are.same({ "r1", "r2", "r3" }, revisions())
            assert.is_true(index_valid())
            assert.is_nil(marker())
        end)

        it("a downgrade terminated during DROP INDEX CONCURRENTLY: the next downgrade finishes it", function()
            assert.are.same({ "r1", "r2", "r3" }, migrate.upgrade({ url = url, dir = dir }))
            assert.are.same({ "r3" }, migrate.downgrade({ url = url, dir = dir, target = "r2" }))
            local app = "kronos-drop-" .. kronos.uuid():sub(1, 8)
            local blocker = block_items() -- the drop marks the index INVALID, then waits for this transaction
            local function down()
                return spawn(("downgrade r1 -d %s --dir %s"):format(H.shell_quote(url .. "?application_name=" .. app),
                    H.shell_quote(dir)))
            end
            local proc = down()
            assert(admin:exec("SELECT pg_terminate_backend($1)", waiting(app, "DROP INDEX CONCURRENTLY%")))
            assert.are.equal(1, (proc.finish()))
            assert(blocker:exec("ROLLBACK"))
            blocker:close()
            assert.is_false(index_valid())
            assert.are.same({ "r1", "r2" }, revisions())
            assert.are.equal("kronos: running downgrade of r2", marker())
            -- an upgrade first would build r3 on the half-dropped index: it stops and says what to run
            local code, out = up(app).finish()
            assert.are.equal(1, code, out)
            assert.matches("the downgrade of revision 'r2' was interrupted; resume it first with `kronos downgrade r1`",
                out, 1, true)
            assert.are.same({ "r1", "r2" }, revisions())
            code, out = down().finish()
            assert.are.equal(0, code, out)
            assert.is_nil(index_valid())
            assert.are.same({ "r1" }, revisions())
            assert.is_nil(marker())
        end)

        it("raw SQL cut short: the next run stops naming the step and the commands that resolve it", function()
            H.write_file(dir .. "/r2.lua", [[
return {
    revision = "r2", down_revision = "r1", message = "a raw concurrent index", transactional = false,
    up = function(op) op.execute("CREATE INDEX CONCURRENTLY ix_items_label ON items (label)") end,
}
]])
            assert.are.same({ "r1" }, migrate.upgrade({ url = url, dir = dir, target = "r1" }))
            local app = "kronos-raw-" .. kronos.uuid():sub(1, 8)
            local blocker = block_items()
            local proc = up(app)
            assert(admin:exec("SELECT pg_terminate_backend($1)", building(app)))
            assert.are.equal(1, (proc.finish()))
            assert(blocker:exec("ROLLBACK"))
            blocker:close()
            local code, out = up(app).finish()
            assert.are.equal(1, code, out)
            assert.matches("r2.lua: the upgrade of revision 'r2' was interrupted", out, 1, true)
            assert.matches("`kronos stamp r2`", out, 1, true)
            assert.matches('COMMENT ON TABLE "kronos_version" IS NULL', out, 1, true)
            assert.not_matches("already exists", out, 1, true)
            -- undo by hand and clear the mark, as the message says: the next upgrade runs it again
            assert(admin:exec("DROP INDEX ix_items_label"))
            assert(admin:exec('COMMENT ON TABLE "kronos_version" IS NULL'))
            code, out = up(app).finish()
            assert.are.equal(0, code, out)
            assert.is_true(index_valid())
            assert.are.same({ "r1", "r2", "r3" }, revisions())
        end)
        -- runs `kronos <command>` as a message printed it (`kronos downgrade r3`), on this database
        local function run_printed(command, app)
            return spawn(("%s -d %s --dir %s"):format(command, H.shell_quote(url .. "?application_name=" .. app),
                H.shell_quote(dir))).finish()
        end

        it("a merge's downgrade cut short: the printed command resumes it alone, both branches stay", function()
            -- b1: a second root; m merges it with r3 and builds an index concurrently; r4 above m
            H.write_file(dir .. "/b1.lua", [[
return {
    revision = "b1", message = "a second root",
    up = function(op) op.create_table("things", { { name = "id", type = "integer" } }) end,
    down = function(op) op.drop_table("things") end,
}
]])
            H.write_file(dir .. "/m.lua", [[
return {
    revision = "m", down_revision = { "r3", "b1" }, message = "merge, an index", transactional = false,
    up = function(op) op.create_index("ix_items_id", "items", { "id" }, { concurrently = true }) end,
    down = function(op) op.drop_index("ix_items_id", { concurrently = true }) end,
}
]])
            H.write_file(dir .. "/r4.lua", [[
return {
    revision = "r4", down_revision = "m", message = "above the merge",
    up = function(op) op.add_column("items", { name = "more", type = "text" }) end,
    down = function(op) op.drop_column("items", "more") end,
}
]])
            migrate.upgrade({ url = url, dir = dir })
            assert.are.same({ "r4" }, migrate.downgrade({ url = url, dir = dir, target = "m" }))
            local app = "kronos-merge-" .. kronos.uuid():sub(1, 8)
            local blocker = block_items()
            local proc = spawn(("downgrade r3 -d %s --dir %s"):format(H.shell_quote(url .. "?application_name=" .. app),
                H.shell_quote(dir)))
            assert(admin:exec("SELECT pg_terminate_backend($1)", waiting(app, "DROP INDEX CONCURRENTLY%")))
            assert.are.equal(1, (proc.finish()))
            assert(blocker:exec("ROLLBACK"))
            blocker:close()
            assert.are.same({ "b1", "m", "r1", "r2", "r3" }, revisions())
            assert.are.equal("kronos: running downgrade of m", marker())
            -- an upgrade would build r4 on the half-dropped index: it stops and names one command
            local code, out = up(app).finish()
            assert.are.equal(1, code, out)
            local command = out:match("the downgrade of revision 'm' was interrupted; resume it first with `kronos ([^`]+)`")
            assert.is_string(command, out)
            assert.not_matches("base", command, 1, true) -- downgrade base would take both branches
            assert.are.same({ "b1", "m", "r1", "r2", "r3" }, revisions())
            code, out = run_printed(command, app)
            assert.are.equal(0, code, out)
            assert.are.same({ "b1", "r1", "r2", "r3" }, revisions()) -- only m went: both parents stay
            assert.is_nil(marker())
            assert.are.equal(0, assert(admin:exec([[SELECT count(*) AS n FROM pg_indexes WHERE indexname = 'ix_items_id']]))[1].n)
            assert.is_not_nil(assert(admin:exec("SELECT to_regclass('things') AS t"))[1].t)
            code, out = up(app).finish()
            assert.are.equal(0, code, out)
            assert.are.same({ "b1", "m", "r1", "r2", "r3", "r4" }, revisions())
        end)

        it("one root of two cut short in raw SQL going down: completed by hand, the printed stamp keeps the other",
            function()
            H.write_file(dir .. "/b1.lua", [[
return {
    revision = "b1", message = "a second root, raw SQL", transactional = false,
    up = function(op)
        op.execute("CREATE TABLE things (id integer, label text)")
        op.execute("CREATE INDEX CONCURRENTLY ix_things ON things (label)")
    end,
    down = function(op)
        op.execute("DROP INDEX CONCURRENTLY ix_things")
        op.execute("DROP TABLE things")
    end,
}
]])
            migrate.upgrade({ url = url, dir = dir, target = "heads" })
            assert.are.same({ "b1", "r1", "r2", "r3" }, revisions())
            local app = "kronos-root-" .. kronos.uuid():sub(1, 8)
            local blocker = assert(kronos.connect(url))
            assert(blocker:exec("BEGIN"))
            assert(blocker:exec("INSERT INTO things VALUES (0, 'blocker')"))
            local function down_b1()
                return spawn(("downgrade b1@base -d %s --dir %s"):format(H.shell_quote(url .. "?application_name=" .. app),
                    H.shell_quote(dir)))
            end
            local proc = down_b1()
            assert(admin:exec("SELECT pg_terminate_backend($1)", waiting(app, "DROP INDEX CONCURRENTLY%")))
            assert.are.equal(1, (proc.finish()))
            assert(blocker:exec("ROLLBACK"))
            blocker:close()
            assert.are.equal("kronos: running downgrade of b1 (raw SQL)", marker())
            local code, out = down_b1().finish()
            assert.are.equal(1, code, out)
            assert.matches("b1.lua: the downgrade of revision 'b1' was interrupted: it is transactional = false and ran raw SQL",
                out, 1, true)
            local command = out:match("complete it by hand and run `kronos (stamp [^`]+)`")
            assert.is_string(command, out)
            assert.are_not.equal("stamp base", command) -- it would empty the version table
            assert.are.same({ "b1", "r1", "r2", "r3" }, revisions())
            -- complete it by hand, then run the command as printed
            assert(admin:exec("DROP INDEX IF EXISTS ix_things"))
            assert(admin:exec("DROP TABLE things"))
            code, out = run_printed(command, app)
            assert.are.equal(0, code, out)
            assert.are.same({ "r1", "r2", "r3" }, revisions()) -- only b1 went: the other root's chain stays
            -- the next run clears the mark (its step is recorded as done) and goes on
            code, out = run_printed("upgrade heads", app)
            assert.are.equal(0, code, out)
            assert.not_matches("interrupted", out, 1, true)
            assert.are.same({ "b1", "r1", "r2", "r3" }, revisions())
            assert.is_nil(marker())
        end)

        it("a helper's DDL cut short: the message says what ran; completed by hand, the printed stamp lets the next go on",
            function()
            H.write_file(dir .. "/r2.lua", [[
return {
    revision = "r2", down_revision = "r1", message = "a column, outside a transaction", transactional = false,
    up = function(op) op.add_column("items", { name = "extra", type = "text" }) end,
    down = function(op) op.drop_column("items", "extra") end,
}
]])
            assert.are.same({ "r1" }, migrate.upgrade({ url = url, dir = dir, target = "r1" }))
            local app = "kronos-ddl-" .. kronos.uuid():sub(1, 8)
            local blocker = block_items() -- ADD COLUMN waits for this transaction's lock
            local proc = up(app)
            assert(admin:exec("SELECT pg_terminate_backend($1)", waiting(app, "ALTER TABLE%")))
            assert.are.equal(1, (proc.finish()))
            assert(blocker:exec("ROLLBACK"))
            blocker:close()
            assert.are.same({ "r1" }, revisions())
            assert.are.equal("kronos: running upgrade of r2 (DDL kronos cannot resume)", marker())
            local code, out = up(app).finish()
            assert.are.equal(1, code, out)
            assert.matches("r2.lua: the upgrade of revision 'r2' was interrupted: it is transactional = false and ran "
                .. "kronos-generated DDL other than CREATE/DROP INDEX CONCURRENTLY", out, 1, true)
            assert.not_matches("raw SQL", out, 1, true)
            local command = out:match("complete it by hand and run `kronos (stamp [^`]+)`")
            assert.are.equal("stamp r2", command, out)
            assert(admin:exec("ALTER TABLE items ADD COLUMN extra text"))
            code, out = run_printed(command, app)
            assert.are.equal(0, code, out)
            assert.are.same({ "r1", "r2" }, revisions())
            code, out = up(app).finish()
            assert.are.equal(0, code, out)
            assert.not_matches("interrupted", out, 1, true)
            assert.are.same({ "r1", "r2", "r3" }, revisions())
            assert.is_nil(marker())
            assert.are.equal(1, assert(admin:exec([[SELECT count(*) AS n FROM information_schema.columns
                WHERE table_name = 'items' AND column_name = 'extra']]))[1].n)
        end)
    end)

    it("eight `kronos createdb` at once on a database that does not exist: all succeed, one creates it", function()
        local name = "kronos_conc_init_" .. kronos.uuid():sub(1, 8)
        local new_url = H.url_for(name)
        local procs = {}
        for i = 1, 8 do
            procs[i] = spawn(("createdb -d %s --dir %s"):format(H.shell_quote(new_url), H.shell_quote(USERS)))
        end
        local created, applied = 0, 0
        for i = 1, 8 do
            local code, out = procs[i].finish()
            assert.are.equal(0, code, out)
            assert.matches("now at 4f1c2a9e7b30 (head); ", out, 1, true)
            if out:find("created database " .. name, 1, true) then created = created + 1 end
            if out:find("upgrade base -> 4f1c2a9e7b30, ", 1, true) then applied = applied + 1 end
        end
        assert.are.equal(1, created)
        assert.are.equal(1, applied)
        local db = assert(kronos.connect(new_url))
        assert.are.equal(1, assert(db:exec("SELECT count(*) AS n FROM kronos_version"))[1].n)
        db:close()
        H.drop_db(name)
    end)
end)
