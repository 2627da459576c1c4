-- kronos.cli: the `kronos` command (bin/kronos), Alembic's verbs over kronos.migrate.
-- main(argv) returns the exit code: 0 success, 1 failure (one line on stderr), 2 usage.
local argparse = require "argparse"
local kronos = require "kronos"
local migrate = require "kronos.migrate"

local M = {}

-- The options shared by every verb. Given before the verb they land in "top_*" (argparse would
-- reset a same-named target when the verb starts), and main() merges them.
local function common(cmd, top)
    local prefix = top and "top_" or ""
    cmd:option("-d --database-url", "Database URL or conninfo (default: $DATABASE_URL, then PG* variables).")
        :target(prefix .. "database_url")
    cmd:option("--dir", "Migrations directory, repeatable (default: $KRONOS_MIGRATIONS, ':'-separated, else ./migrations).")
        :target(prefix .. "dir"):count("*")
    cmd:option("--module", "Lua module of migrations (e.g. kronos.migrations), repeatable.")
        :target(prefix .. "module"):count("*")
    cmd:option("--version-table", "Name of the version table (default: kronos_version).")
        :target(prefix .. "version_table")
    return cmd
end

local function running(cmd)
    common(cmd)
    cmd:flag("--sql", "Print the SQL instead of running it (offline; TARGET may be a from:to range).")
    cmd:option("--lock-timeout", "How long to wait for another process's migration (default: 60s).")
    cmd:option("--statement-timeout", "statement_timeout for the migrations (default: the server's).")
    cmd:flag("--per-migration", "One transaction per migration instead of one for the whole run.")
    cmd:option("--retries", "Retry a step whose lock wait ran out (lock_timeout) N times, with backoff (default: 0).")
    return cmd
end

local function build_parser()
    local p = argparse("kronos", "Schema migrations for Kronos on PostgreSQL (Alembic's verbs).")
    common(p, true) -- the options go before or after the verb
    p:command_target("command")
    p:require_command(true)
    local up = running(p:command("upgrade", "Upgrade to TARGET (default: head)."))
    up:argument("target", "head, heads, a revision (or unique prefix), +N, REV+N; with --sql FROM:TO."):args("?")
    up:flag("--allow-changed", "Upgrade even if files of applied migrations have changed.")
    local down = running(p:command("downgrade", "Downgrade to TARGET (default: base)."))
    down:argument("target", "base, a revision (or unique prefix), -N, REV-N; with --sql FROM:TO."):args("?")
    common(p:command("current", "Show the revisions the database is at."))
    common(p:command("heads", "Show the heads of the revision graph."))
    common(p:command("history", "List every revision, applied or pending."))
    local stamp = common(p:command("stamp", "Record TARGET as the database's version without running migrations."))
    stamp:argument("target", "A revision, head, heads or base.")
    stamp:flag("--sql", "Print the SQL instead of running it.")
    local check = common(p:command("check", "Exit 0 when the database is at head with unchanged files, else 1."))
    check:flag("--drift", "Compare the live schema with what its applied migrations build in a scratch database.")
    check:option("--scratch-url", "An empty database for --drift (default: kronos creates and drops one).")
    local fin = running(p:command("finish", "Run the pending finish of every applied two-phase migration."))
    fin:argument("target", "With --sql: FROM:TO, the finishes of TO's lineage not in FROM's."):args("?")
    local verify = common(p:command("verify", "On a scratch database, check that every migration's down undoes its up."))
    verify:option("--scratch-url", "An empty database to use (default: kronos creates and drops one on the server).")
    local rev = common(p:command("revision", "Create a new migration file whose down_revision is the current head."))
    rev:option("-m --message", "What the migration does."):count(1)
    rev:option("--rev-id", "Use this revision id instead of a random one.")
    local lint = common(p:command("lint", "Check the migrations' DDL for locks and rewrites of busy tables (offline)."))
    lint:flag("-v --verbose", "Also list the findings allowed by safe = ... and every rule.")
    common(p:command("init", "Create the database if it does not exist, then upgrade to head."))
    common(p:command("console", "A Lua REPL with kronos, db and users ready."))
    return p
end

local function opts_of(args)
    return {
        url = args.database_url,
        dir = args.dir,
        modules = args.module,
        version_table = args.version_table,
        target = args.target,
        sql = args.sql or nil,
        lock_timeout = args.lock_timeout,
        retries = args.retries and (tonumber(args.retries) or -1), -- not a number: refused by the engine side
        statement_timeout = args.statement_timeout,
        transaction_per_migration = args.per_migration or nil,
        allow_changed = args.allow_changed or nil,
        on_lint = function(f) io.stderr:write("kronos: warning: ", (f.text:gsub("[\r\n]+", " ")), "\n") end,
        log = not args.sql and function(line)
            io.stdout:write(line, "\n")
            io.stdout:flush()
        end or nil,
    }
end

-- The database a URL or conninfo names, or nil when it names none.
local function dbname_of(url)
    if not url or url == "" then return os.getenv("PGDATABASE") end
    local path = url:match("^postgres%a*://[^/?]*/([^?]*)")
    if path then
        if path == "" then return nil end
        return (path:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
    end
    if url:match("^postgres%a*://") then return nil end
    return url:match("dbname%s*=%s*'([^'\\]*)'") or url:match("dbname%s*=%s*([^%s']+)")
end

-- init: connect; if the database is missing, create it from the maintenance database first.
local function ensure_database(url)
    local db, err = kronos.connect(url)
    if db then return db end
    local name = dbname_of(url or os.getenv("DATABASE_URL"))
    if not (name and tostring(err.message):find("does not exist", 1, true)) then error(err, 0) end
    local admin, aerr = kronos.connect({ url = url, dbname = "postgres" })
    if not admin then error(aerr, 0) end
    local ok, cerr = admin:exec("CREATE DATABASE " .. admin:escape_identifier(name))
    admin:close()
    -- another `kronos init` may have created it in the meantime: 42P04, or 23505 on the catalog's
    -- unique index when both CREATE DATABASE ran at the same moment
    local raced = not ok and (cerr.sqlstate == "42P04" or
        (cerr.sqlstate == "23505" and cerr.constraint == "pg_database_datname_index"))
    if not ok and not raced then error(cerr, 0) end
    if ok then io.stdout:write("created database ", name, "\n") end
    db, err = kronos.connect(url)
    if not db then error(err, 0) end
    return db
end

local function list(revs)
    return #revs > 0 and table.concat(revs, ", ") or "base"
end

local verbs = {}

-- upgrade and downgrade: the SQL with --sql; else the steps go to the log, or say there were none.
local function moving(run, nothing)
    return function(args)
        local opts = opts_of(args)
        local res = run(opts)
        if args.sql then
            io.stdout:write(res)
        elseif #res == 0 then
            io.stdout:write(nothing, list(migrate.current(opts)), "\n")
        end
    end
end

verbs.upgrade = moving(migrate.upgrade, "nothing to upgrade: already at ")
verbs.downgrade = moving(migrate.downgrade, "nothing to downgrade: at ")

function verbs.current(args)
    local s = migrate.status(opts_of(args))
    if #s.current == 0 then io.stdout:write("base (no revision applied)\n") end
    local heads = {}
    for _, h in ipairs(s.heads) do heads[h] = true end
    for _, rev in ipairs(s.current) do
        io.stdout:write(rev, heads[rev] and " (head)" or "", "\n")
    end
    if #(s.finish_pending or {}) > 0 then -- two-phase migrations: up applied, finish not yet run
        io.stdout:write("finish pending: ", table.concat(s.finish_pending, ", "), "\n")
    end
end

function verbs.heads(args)
    for _, h in ipairs(migrate.history(setmetatable({ offline = true }, { __index = opts_of(args) }))) do
        if h.head then io.stdout:write(h.revision, " (", h.file, ")\n") end
    end
end

function verbs.history(args)
    local hist = migrate.history(opts_of(args))
    for i = #hist, 1, -1 do
        local h = hist[i]
        local down = h.down_revision
        if type(down) == "table" then down = "(" .. table.concat(down, ", ") .. ")" end
        local tags = {}
        if h.head then tags[#tags + 1] = "head" end
        if h.current then tags[#tags + 1] = "current" end
        if h.changed then tags[#tags + 1] = "CHANGED" end
        if h.finish_pending then tags[#tags + 1] = "finish pending" elseif h.finished then tags[#tags + 1] = "finished" end
        local state = h.applied and ("applied " .. tostring(h.applied_at) ..
            (h.execution_ms and (" in " .. h.execution_ms .. " ms") or "")) or "pending"
        io.stdout:write(("%s -> %s%s, %s [%s]\n"):format(down or "<base>", h.revision,
            #tags > 0 and " (" .. table.concat(tags, ", ") .. ")" or "", h.message, state))
    end
end

function verbs.stamp(args)
    local res = migrate.stamp(opts_of(args))
    if args.sql then io.stdout:write(res) else io.stdout:write("stamped: ", list(res), "\n") end
end

function verbs.check(args)
    if args.drift then return require("kronos.deploy").cli_drift(args) end
    local ok, why = migrate.check(opts_of(args))
    if ok then
        io.stdout:write("up to date", why and (" (finish pending: " .. table.concat(why.finish_pending, ", ") .. ")") or "", "\n")
        return 0
    end
    local parts = {}
    if #why.pending > 0 then parts[#parts + 1] = #why.pending .. " pending: " .. table.concat(why.pending, ", ") end
    if #why.changed > 0 then parts[#parts + 1] = "changed since applied: " .. table.concat(why.changed, ", ") end
    if #why.unknown > 0 then parts[#parts + 1] = "unknown to the files: " .. table.concat(why.unknown, ", ") end
    io.stderr:write("kronos: not up to date (", table.concat(parts, "; "), ")\n")
    return 1
end

function verbs.revision(args)
    local path = migrate.revision { dir = args.dir, modules = args.module, message = args.message, revision = args.rev_id }
    io.stdout:write("created ", path, "\n")
    require("kronos.deploy").warn_heads({ dir = args.dir, modules = args.module }, path, opts_of(args).on_lint)
end

-- finish: the pending finishes of two-phase migrations (after every instance runs the new code).
function verbs.finish(args)
    local opts = opts_of(args)
    local res = migrate.finish(opts)
    if args.sql then
        io.stdout:write(res)
    elseif #res == 0 then
        io.stdout:write("nothing to finish\n")
    end
end

function verbs.verify(args)
    return require("kronos.deploy").cli_verify(args)
end

-- lint: the findings that block (exit 1), the notes; --verbose adds the allowed ones.
function verbs.lint(args)
    local found, blocking = migrate.lint { dir = args.dir, modules = args.module }
    local allowed = 0
    for _, f in ipairs(found) do
        if f.allowed then allowed = allowed + 1 end
        if not f.allowed or args.verbose then io.stdout:write(f.level, ": ", f.text, "\n") end
    end
    io.stdout:write(("%d finding(s)"):format(blocking), allowed > 0 and
        (", %d allowed by safe%s"):format(allowed, args.verbose and "" or " (--verbose lists them)") or "", "\n")
    return blocking > 0 and 1 or 0
end

function verbs.init(args)
    local opts = opts_of(args)
    local db = ensure_database(opts.url)
    opts.db = db
    local ok, err = pcall(migrate.upgrade, opts)
    if ok then
        io.stdout:write("at ", list(migrate.current(opts)), "\n")
    end
    db:close()
    if not ok then error(err, 0) end
end

function verbs.console(args)
    local db, err = kronos.connect(args.database_url)
    if not db then error(err, 0) end
    local ok, console = pcall(require, "kronos.console")
    if not ok then error(kronos.error("unavailable", "the console module kronos.console is not installed"), 0) end
    console.start(db)
    db:close()
end

local function one_line(err)
    return (tostring(err):gsub("[\r\n]+", " "))
end

function M.main(argv)
    if argv[1] == "--version" then
        io.stdout:write("kronos ", kronos._VERSION, "\n")
        return 0
    end
    local parser = build_parser()
    local ok, args = parser:pparse(argv)
    if not ok then
        io.stderr:write(parser:get_usage(), "\n\nkronos: ", args, "\n")
        return 2
    end
    for _, key in ipairs { "database_url", "version_table" } do
        if args[key] == nil then args[key] = args["top_" .. key] end
    end
    -- --dir and --module given before and after the verb add up; none given: nil (the defaults)
    for _, key in ipairs { "dir", "module" } do
        local all = {}
        for _, given in ipairs { args["top_" .. key] or {}, args[key] or {} } do
            for _, v in ipairs(given) do all[#all + 1] = v end
        end
        args[key] = #all > 0 and all or nil
    end
    local done, res = pcall(verbs[args.command], args)
    if not done then
        io.stderr:write("kronos: ", one_line(res), "\n")
        return 1
    end
    return res or 0
end

return M
