-- kronos.deploy: what a deploy without downtime needs beside the engine: the DDL safety check
-- (kronos.core.lint), round-trip verification and drift (kronos.core.catalog). The rules and
-- the catalog comparison are C; this file only walks the migrations and orders the calls.
-- kronos.migrate exposes these as migrate.lint{}, migrate.verify{}, migrate.drift{}.
local core = require "kronos.core"

local D = {}

local function migrate() return require "kronos.migrate" end

-- A finding blocks (lint exits non-zero) when it is a finding, not a note, and not allowed.
function D.blocking(f)
    return f.level == "finding" and not f.allowed
end

-- The findings of one loaded migration entry, its up and finish phases, in call order.
function D.lint_entry(entry, x)
    local out = {}
    for _, phase in ipairs { "up", "finish" } do
        for _, f in ipairs(core.lint.phase(entry, phase, core.ddl, x)) do out[#out + 1] = f end
    end
    return out
end

-- lint{dir =, x =} -> findings (every level, file order then call order), and the number that
-- block. No database is touched.
function D.lint(opts)
    opts = opts or {}
    local out, blocking = {}, 0
    for _, entry in ipairs(migrate().load({ dir = opts.dir, modules = opts.modules })) do
        for _, f in ipairs(D.lint_entry(entry, opts.x)) do
            out[#out + 1] = f
            if D.blocking(f) then blocking = blocking + 1 end
        end
    end
    return out, blocking
end

local REFUSES = "ban-concurrent-index-creation-in-transaction"

-- Before an upgrade runs: pending() is the set of revisions the database lacks; the up of each
-- pending migration runs against the recording op (as offline SQL does: op.db is nil, so work
-- guarded by `if op.db then` is skipped). A pending migration with `concurrently` in a
-- transaction is refused before anything runs (the server would refuse it halfway through the
-- run); every other blocking finding goes to opts.on_lint(finding) as a warning.
function D.check_upgrade(list, opts, pending)
    local todo = pending()
    if not next(todo) then return end
    for _, entry in ipairs(list) do
        local mig = entry.migration
        if type(mig) == "table" and todo[mig.revision] then
            local ok, found = pcall(core.lint.phase, entry, "up", core.ddl, opts.x)
            for _, f in ipairs(ok and found or {}) do
                if f.rule == REFUSES then
                    error(core.error("unsafe_migration", f.text, {
                        file = f.file, revision = f.revision, line = tostring(f.line), rule = f.rule,
                    }), 0)
                end
                if D.blocking(f) and opts.on_lint then opts.on_lint(f) end
            end
        end
    end
end

-- ---- lock retries -----------------------------------------------------------------------------

-- A step's own lock wait ran out (lock_timeout, 55P03): not the migration lock (another migrator,
-- code migration_locked), which has no revision.
local function lock_timed_out(err)
    return type(err) == "table" and err.sqlstate == "55P03" and err.revision ~= nil and err.code ~= "migration_locked"
end

-- The sessions that hold a lock on the tables the failing migration touches (all user tables when
-- it touches none through op, e.g. raw SQL): [{table, pid, application_name, state, mode, seconds}].
local function lock_holders(db, list, err, x)
    local names = {}
    for _, entry in ipairs(list) do
        if entry.file == err.file then
            for _, phase in ipairs { "up", "down", "finish", "unfinish" } do
                local ok, _, tables = pcall(core.lint.phase, entry, phase, core.ddl, x)
                for name in pairs(ok and tables or {}) do names[#names + 1] = name end
            end
        end
    end
    local rows = db:exec([[
        SELECT c.relname AS "table", a.pid, a.application_name, a.state, l.mode,
               round(extract(epoch FROM clock_timestamp() - coalesce(a.xact_start, a.query_start)))::int AS seconds
        FROM pg_locks l JOIN pg_class c ON c.oid = l.relation JOIN pg_stat_activity a ON a.pid = l.pid
        WHERE l.granted AND l.locktype = 'relation' AND l.pid <> pg_backend_pid()
          AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
          AND c.relnamespace NOT IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace)
          AND c.relkind IN ('r', 'p', 'm', 'v')
          AND ($1 = '' OR c.relname = ANY (string_to_array($1, chr(31))))
        ORDER BY seconds DESC, a.pid]], table.concat(names, "\31"))
    return rows or {}
end

-- Sleeps on the server (no yielding C sleep is needed: the run holds no lock while it waits).
local function pause(db, ms)
    db:exec("SELECT pg_sleep($1::float8 / 1000)", ms)
end

-- The target left after `done` steps of a relative one (+N, -N) were kept by a failed try.
local function remaining(target, done)
    local sign, n = tostring(target or ""):match("^([%+%-])(%d+)$")
    if not sign then return target end
    n = tonumber(n) - done
    if n <= 0 then return nil end
    return sign .. n
end

-- Refuses an option retries that is not a whole number >= 0 (before anything runs), naming
-- fname, the command called.
function D.check_retries(retries, fname)
    if type(retries) ~= "number" or retries < 0 or retries % 1 ~= 0 then
        migrate().bad_option(fname, "retries", "a non-negative integer expected")
    end
end

-- After engine.run failed with err: a lock wait that timed out is retried up to opts.retries
-- times (default 0), waiting 250 ms, 500 ms, 1 s ... (at most 10 s) between tries; each retry
-- starts the run again from the database's state, so in the one-transaction mode the whole run
-- is retried from the start (nothing of the failed try was kept), and with per-migration
-- transactions the kept steps stay and the rest is retried. When it still times out, the error
-- names the table and the session that held it (err.holder). Any other error is raised as is.
function D.after_failure(err, cmd, list, opts, db, attempt)
    if not lock_timed_out(err) then error(err, 0) end
    local retries = opts.retries or 0
    local done, tries, delay = {}, 0, 250
    local o = {}
    for k, v in pairs(opts) do o[k] = v end
    while true do
        for _, rev in ipairs(err.kept or {}) do done[#done + 1] = rev end
        if tries >= retries then break end
        tries = tries + 1
        if type(opts.on_event) == "function" then
            opts.on_event { type = "lock_retry", revision = err.revision, file = err.file, attempt = tries,
                            retries = retries, delay_ms = delay }
        end
        pause(db, delay)
        delay = math.min(delay * 2, 10000)
        if cmd ~= "finish" then o.target = remaining(opts.target, #done) end
        if cmd ~= "finish" and opts.target and not o.target then return done end
        local ok, res = pcall(attempt, o)
        if ok then
            for _, rev in ipairs(res) do done[#done + 1] = rev end
            return done
        end
        if not lock_timed_out(res) then error(res, 0) end
        err = res
    end
    -- still waiting: say for what, and for whom
    local holders = lock_holders(db, list, err, opts.x)
    local h = holders[1]
    local what = h and ("; table %q is locked (%s) by pid %d%s, %s for %d s"):format(h.table, h.mode, h.pid,
        (h.application_name or "") ~= "" and (" (application_name %q)"):format(h.application_name) or "",
        h.state or "?", h.seconds or 0) or "; the lock holder was gone when kronos looked"
    err.message = tostring(err.message) .. (retries > 0 and (" (after %d retries)"):format(retries) or "") .. what
    err.retries = retries
    if h then
        err.table = h.table
        err.holder = { pid = h.pid, application_name = h.application_name, state = h.state, mode = h.mode,
                       seconds = h.seconds }
    end
    err.kept = done
    error(err, 0)
end

-- ---- scratch databases, drift, round trips ---------------------------------------------------

local function connect(conninfo)
    local db, err = core.connect(conninfo)
    if not db then error(err, 0) end
    return db
end

local function vt_of(opts) return opts.version_table or "kronos_version" end

-- Runs fn(scratch_db) on an empty database: opts.scratch_url (which must hold no objects), else
-- a database kronos creates on the server of opts.url (or $DATABASE_URL) and drops afterwards,
-- whatever fn does. Returns fn's results; fname (the function called) is named in errors.
local function with_scratch(opts, fname, fn)
    if opts.scratch_url then
        local db = connect(opts.scratch_url)
        local snap, err = core.catalog.snapshot(db, "")
        if not snap then db:close() error(err, 0) end
        if next(snap) then
            db:close()
            error(core.error("scratch_not_empty", "the scratch database is not empty (it has " .. next(snap)
                .. "); give an empty database, or no scratch URL to let kronos create one"), 0)
        end
        local ok, a, b = pcall(fn, db)
        db:close()
        if not ok then error(a, 0) end
        return a, b
    end
    local url = opts.url
    if not url and opts.db then
        migrate().bad_option(fname, "url", "a scratch database needs url (its server) or scratch_url, not only db")
    end
    local admin = connect(url)
    local name = "kronos_scratch_" .. core.uuid():gsub("-", ""):sub(1, 16)
    local quoted = admin:escape_identifier(name)
    local made, merr = admin:exec("CREATE DATABASE " .. quoted)
    if not made then admin:close() error(merr, 0) end
    local ok, a, b = pcall(function()
        local db = connect({ url = url, dbname = name })
        local fok, x, y = pcall(fn, db)
        db:close()
        if not fok then error(x, 0) end
        return x, y
    end)
    admin:exec("DROP DATABASE IF EXISTS " .. quoted .. " WITH (FORCE)")
    admin:close()
    if not ok then error(a, 0) end
    return a, b
end

local function run_opts(opts, db, extra)
    local o = { db = db, dir = opts.dir, modules = opts.modules, version_table = opts.version_table, x = opts.x,
                lock_timeout = opts.lock_timeout, allow_changed = true }
    for k, v in pairs(extra or {}) do o[k] = v end
    return o
end

-- drift{url|db, dir, scratch_url} -> differences ({} when none), {current = ...}: builds, in a
-- scratch database, what the migrations the database has applied should have produced, and
-- compares the two catalogs (the version table left out). A difference's expected side is the
-- migrations', its actual side the live database's.
function D.drift(opts)
    opts = opts or {}
    local m = migrate()
    local live = opts.db or connect(opts.url)
    local ok, current, actual = pcall(function()
        local cur = m.current(run_opts(opts, live))
        local snap, err = core.catalog.snapshot(live, vt_of(opts))
        if not snap then error(err, 0) end
        return cur, snap
    end)
    if not opts.db then live:close() end
    if not ok then error(current, 0) end
    local expected = with_scratch(opts, "drift", function(scratch)
        for _, rev in ipairs(current) do m.upgrade(run_opts(opts, scratch, { target = rev })) end
        local snap, err = core.catalog.snapshot(scratch, vt_of(opts))
        if not snap then error(err, 0) end
        return snap
    end)
    return core.catalog.compare(expected, actual), { current = current }
end

-- The set of revisions applied, from history (oldest first), and each revision's parents.
local function graph_state(hist)
    local applied, parents = {}, {}
    for _, h in ipairs(hist) do
        if h.applied then applied[h.revision] = true end
        local d = h.down_revision
        parents[h.revision] = type(d) == "table" and d or (d and { d } or {})
    end
    return applied, parents
end

local function ancestors(rev, parents, into)
    into = into or {}
    for _, p in ipairs(parents[rev] or {}) do
        if not into[p] then
            into[p] = true
            ancestors(p, parents, into)
        end
    end
    return into
end

local function same_set(a, b)
    for k in pairs(a) do if not b[k] then return false end end
    for k in pairs(b) do if not a[k] then return false end end
    return true
end

-- verify{url|scratch_url, dir} -> true, {checked = n} | false, {revision, file, step, differences
-- | error}: on a scratch database, for every revision in graph order: upgrade one step (and run
-- its finish, when it has one), snapshot, downgrade, compare with the snapshot before the step,
-- upgrade again and compare with the one after it. Stops at the first revision whose down does
-- not undo its up.
function D.verify(opts)
    opts = opts or {}
    local m = migrate()
    return with_scratch(opts, "verify", function(db)
        local function snap()
            local s, err = core.catalog.snapshot(db, vt_of(opts))
            if not s then error(err, 0) end
            return s
        end
        local hist = m.history(run_opts(opts, db))
        local checked = 0
        for _, h in ipairs(hist) do
            local rev = h.revision
            local applied, parents = graph_state(m.history(run_opts(opts, db)))
            local want = ancestors(rev, parents)
            if not same_set(applied, want) then -- a branch: start from exactly rev's ancestors
                if next(applied) then m.downgrade(run_opts(opts, db, { target = "base" })) end
                for _, p in ipairs(parents[rev]) do m.upgrade(run_opts(opts, db, { target = p })) end
            end
            local function failed(step, fields)
                fields.revision, fields.file, fields.step = rev, h.file, step
                return false, fields
            end
            -- a two-phase migration goes through both phases: its down (after unfinish) must undo them
            local function up(step)
                local ok, err = pcall(m.upgrade, run_opts(opts, db, { target = rev }))
                if ok and h.finish then ok, err = pcall(m.finish, run_opts(opts, db)) end
                if not ok then return failed(step, { error = err }) end
            end
            local before = snap()
            local bad, res = up("upgrade")
            if bad ~= nil then return bad, res end
            local after = snap()
            local ok, err = pcall(m.downgrade, run_opts(opts, db, { target = parents[rev][1] or "base" }))
            if not ok then return failed("downgrade", { error = err }) end
            local diffs = core.catalog.compare(before, snap())
            if #diffs > 0 then return failed("downgrade", { differences = diffs }) end
            bad, res = up("upgrade again")
            if bad ~= nil then return bad, res end
            diffs = core.catalog.compare(after, snap())
            if #diffs > 0 then return failed("upgrade again", { differences = diffs }) end
            checked = checked + 1
        end
        return true, { checked = checked }
    end)
end

-- ---- the CLI's verbs (lua/kronos/cli.lua hands these over) ------------------------------------

local function cli_opts(args)
    return { url = args.database_url, dir = args.dir, modules = args.module, version_table = args.version_table,
             scratch_url = args.scratch_url }
end

-- kronos check --drift: exit 0 "no drift", else 1 and one line per difference.
function D.cli_drift(args)
    local diffs, info = D.drift(cli_opts(args))
    local at = #info.current > 0 and table.concat(info.current, ", ") or "base"
    if #diffs == 0 then
        io.stdout:write("no drift: the schema is what the migrations applied (", at, ") build\n")
        return 0
    end
    for _, d in ipairs(diffs) do io.stdout:write((d.text:gsub("[\r\n]+", " ")), "\n") end
    io.stderr:write(("kronos: drift: %d difference(s) from what the migrations applied (%s) build\n"):format(#diffs, at))
    return 1
end

-- kronos verify: exit 0 "N revisions verified", else 1 naming the first that does not round-trip.
function D.cli_verify(args)
    local ok, res = D.verify(cli_opts(args))
    if ok then
        io.stdout:write(("verified %d revision(s): each down undoes its up\n"):format(res.checked))
        return 0
    end
    if res.differences then
        for _, d in ipairs(res.differences) do io.stdout:write((d.text:gsub("[\r\n]+", " ")), "\n") end
        io.stderr:write(("kronos: %s: revision '%s': after %s the schema differs (%d difference(s))\n")
            :format(res.file, res.revision, res.step, #res.differences))
    else
        io.stderr:write(("kronos: %s: revision '%s': %s failed: %s\n")
            :format(res.file, res.revision, res.step, (tostring(res.error):gsub("[\r\n]+", " "))))
    end
    return 1
end

-- After `revision` wrote path: the blocking findings of the migrations it builds on (the heads
-- before it, what the author most likely just wrote) go to warn(finding).
function D.warn_heads(sources, path, warn)
    local list = migrate().load(sources)
    local parents = {}
    for _, e in ipairs(list) do
        if e.file == path then
            local down = e.migration.down_revision
            for _, r in ipairs(type(down) == "table" and down or { down }) do parents[r] = true end
        end
    end
    for _, e in ipairs(list) do
        if parents[e.migration.revision] then
            for _, f in ipairs(D.lint_entry(e)) do
                if D.blocking(f) then warn(f) end
            end
        end
    end
end

return D
