-- kronos.cli: the `kronos` command (bin/kronos), Alembic's verbs over kronos.migrate.
-- main(argv) returns the exit code: 0 success, 1 failure (one line `kronos: <error>` on stderr),
-- 2 usage; `check` adds 3 (pending), 4 (changed files), 5 (revisions no file provides).
--
-- Startup matters (a service runs `kronos upgrade` on every start): the argument parser is the
-- small table-driven one below (no argparse), the C module is loaded only by verbs that need it,
-- a run opens one connection and reads the migration files once.
local M = {}

local EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2
local EXIT_PENDING, EXIT_CHANGED, EXIT_UNKNOWN = 3, 4, 5
M.exit_codes = { ok = EXIT_OK, failure = EXIT_FAIL, usage = EXIT_USAGE, pending = EXIT_PENDING,
    changed = EXIT_CHANGED, unknown = EXIT_UNKNOWN }

-- ---- output ---------------------------------------------------------------------------------

-- Text from outside (messages, errors, revision ids) as one line: a control byte would break a
-- log line, so line breaks read \n and other control bytes \xNN.
local function one_line(s)
    return (tostring(s):gsub("%c", function(c)
        if c == "\n" then return "\\n" elseif c == "\r" then return "\\r" elseif c == "\t" then return " " end
        return ("\\x%02x"):format(c:byte())
    end))
end
M.one_line = one_line

local function say(...)
    local parts = { ... }
    for i = 1, #parts do parts[i] = tostring(parts[i]) end
    io.stdout:write(table.concat(parts), "\n")
    io.stdout:flush()
end

local function warn(...)
    io.stderr:write("kronos: warning: ", one_line(table.concat({ ... })), "\n")
end

-- Errors the CLI raises itself (usage errors exit 2, the others 1).
local function usage_error(msg) error({ usage = msg }, 0) end

local function lazy_core() return require("kronos.core") end

local function fail(code, message, fields)
    error(lazy_core().error(code, message, fields), 0)
end

-- JSON through lua-cjson (which escapes strings exactly); arrays are marked, because cjson 2.1
-- encodes an empty table as {}.
local ARRAY = {}
local function array(t) return setmetatable(t or {}, ARRAY) end
local function to_json(v)
    local cjson = require "cjson"
    local function enc(x)
        if type(x) ~= "table" then return cjson.encode(x) end
        if getmetatable(x) == ARRAY then
            local out = {}
            for i = 1, #x do out[i] = enc(x[i]) end
            return "[" .. table.concat(out, ",") .. "]"
        end
        local keys = {}
        for k in pairs(x) do keys[#keys + 1] = k end
        table.sort(keys)
        local out = {}
        for _, k in ipairs(keys) do out[#out + 1] = cjson.encode(k) .. ":" .. enc(x[k]) end
        return "{" .. table.concat(out, ",") .. "}"
    end
    return enc(v)
end

-- ---- the command line ----------------------------------------------------------------------

-- Every option: the key it sets in args, whether it takes a value, and its help.
local OPTIONS = {
    { "-d", "--database-url", key = "database_url", value = "URL",
        help = "Database URL or libpq conninfo (default: $DATABASE_URL, then the PG* variables)." },
    { nil, "--dir", key = "dir", value = "DIR",
        help = "Migrations directory (default: $KRONOS_MIGRATIONS, else ./migrations)." },
    { nil, "--version-table", key = "version_table", value = "NAME",
        help = "Name of the version table (default: kronos_version)." },
    { "-x", nil, key = "x", value = "KEY=VALUE", many = true,
        help = "Hand KEY=VALUE to the migrations as op.x.KEY (repeatable)." },
    { nil, "--sql", key = "sql", help = "Print the SQL instead of running it (offline: no database)." },
    { nil, "--lock-timeout", key = "lock_timeout", value = "DURATION",
        help = "How long to wait for another process's migration lock (default: 60s)." },
    { nil, "--statement-timeout", key = "statement_timeout", value = "DURATION",
        help = "statement_timeout for the migrations (default: the server's)." },
    { nil, "--per-migration", key = "per_migration",
        help = "Commit after each migration instead of running the whole run as one transaction." },
    { nil, "--allow-changed", key = "allow_changed",
        help = "Run even though files of applied migrations have changed since they were applied." },
    { nil, "--purge", key = "purge",
        help = "Delete every row of the version table first (also revisions no file provides)." },
    { "-m", "--message", key = "message", value = "MESSAGE", help = "What the migration does." },
    { nil, "--rev-id", key = "rev_id", value = "ID", help = "Use this revision id instead of a random one." },
    { "-v", "--verbose", key = "verbose", help = "Show every field of each revision." },
    { nil, "--json", key = "json", help = "Print JSON for scripts instead of text." },
    { "-h", "--help", key = "help", help = "Show this help and exit." },
}
local BY_FLAG = {}
for _, o in ipairs(OPTIONS) do
    if o[1] then BY_FLAG[o[1]] = o end
    if o[2] then BY_FLAG[o[2]] = o end
end

local COMMON = { "database_url", "dir", "version_table", "help" }
local RUNNING = { "sql", "lock_timeout", "statement_timeout", "per_migration", "x" }

-- The verbs in help order: usage of the positional arguments, the options beyond COMMON.
local VERBS = {}
local ORDER = {}
local function verb(name, def)
    def.name = name
    def.accepts = {}
    for _, k in ipairs(COMMON) do def.accepts[k] = true end
    for _, k in ipairs(def.options or {}) do def.accepts[k] = true end
    VERBS[name] = def
    ORDER[#ORDER + 1] = name
end

verb("init", {
    summary = "Create a migrations directory for a new project (Alembic's init).",
    args = { { "DIR", "?", "The directory to create (default: --dir, $KRONOS_MIGRATIONS, else ./migrations)." } },
    details = "Refuses a directory that exists and is not empty. Creates no database: see createdb.",
})
verb("createdb", {
    summary = "Create the database if it does not exist (from the `postgres` database), then upgrade to head.",
    options = { "lock_timeout", "statement_timeout", "per_migration", "x" },
})
verb("upgrade", {
    summary = "Upgrade the database to TARGET (default: head).",
    args = { { "TARGET", "?", "head, heads, a revision or unique prefix, +N (the next N), REV+N; "
        .. "with --sql also FROM:TO." } },
    options = { "sql", "lock_timeout", "statement_timeout", "per_migration", "x", "allow_changed" },
})
verb("downgrade", {
    summary = "Downgrade the database to TARGET (required: `base` reverts everything).",
    args = { { "TARGET", "1", "base, a revision or unique prefix, -N (the last N applied), REV-N; "
        .. "with --sql FROM:TO, such as head:base." } },
    options = { "sql", "lock_timeout", "statement_timeout", "per_migration", "x" },
})
verb("current", {
    summary = "Show the revisions the database is at (exit 1 when it has revisions no file provides).",
    options = { "verbose", "json" },
})
verb("heads", { summary = "Show the heads of the revision graph (no database).", options = { "verbose", "json" } })
verb("branches", { summary = "Show the branch points of the revision graph (no database).", options = { "verbose" } })
verb("history", {
    summary = "List every revision, newest first; with the applied state when the database is reachable.",
    options = { "verbose", "json" },
})
verb("show", {
    summary = "Show one revision: its parents, children, file, message (no database).",
    args = { { "REV", "1", "A revision or unique prefix, or head." } },
})
verb("stamp", {
    summary = "Record TARGET as the database's version without running any migration.",
    args = { { "TARGET", "1", "A revision, head, heads or base." } },
    options = { "sql", "purge", "lock_timeout" },
})
verb("check", {
    summary = "Exit 0 when the database is at head with unchanged files; 3 pending, 4 changed, 5 unknown.",
    options = { "json" },
    details = "When several apply, the highest code wins (unknown over changed over pending). "
        .. "Migrations without a down function are reported as warnings on stderr.",
})
verb("revision", {
    summary = "Create a new migration file on top of the head (refuses several heads: see merge).",
    options = { "message", "rev_id" },
    required = { message = true },
})
verb("merge", {
    summary = "Create a migration that merges REV... (or `heads`: every head) into one.",
    args = { { "REV", "+", "Two or more revisions, or heads." } },
    options = { "message", "rev_id" },
    required = { message = true },
})
verb("repair", {
    summary = "Accept edits to applied migration files: record their current checksums (Flyway's repair).",
})
verb("console", { summary = "A Lua console with kronos, db and users ready (line editing when lua-readline is installed)." })

local EXIT_HELP = ([[
Exit status: 0 success; 1 failure (one line `kronos: <error>` on stderr); 2 usage error;
check: 3 pending migrations, 4 applied files changed, 5 revisions no file provides.]])

local function option_line(o)
    local names = (o[1] and o[2]) and (o[1] .. ", " .. o[2]) or (o[1] or o[2])
    if o.value then names = names .. " " .. o.value end
    return ("   %-34s %s"):format(names, o.help)
end

local function verb_usage(v)
    local parts = { "kronos", v.name }
    for _, a in ipairs(v.args or {}) do
        parts[#parts + 1] = a[2] == "?" and "[" .. a[1] .. "]" or a[2] == "+" and a[1] .. "..." or a[1]
    end
    if v.required and v.required.message then parts[#parts + 1] = "-m MESSAGE" end
    parts[#parts + 1] = "[options]"
    return "Usage: " .. table.concat(parts, " ")
end

local function verb_help(v)
    local out = { verb_usage(v), "", v.summary }
    if v.details then out[#out + 1] = v.details end
    if v.args then
        out[#out + 1] = ""
        out[#out + 1] = "Arguments:"
        for _, a in ipairs(v.args) do out[#out + 1] = ("   %-34s %s"):format(a[1], a[3]) end
    end
    out[#out + 1] = ""
    out[#out + 1] = "Options:"
    for _, o in ipairs(OPTIONS) do
        if v.accepts[o.key] then out[#out + 1] = option_line(o) end
    end
    out[#out + 1] = ""
    out[#out + 1] = EXIT_HELP
    return table.concat(out, "\n") .. "\n"
end

local function main_help()
    local out = { "Usage: kronos [options] VERB [arguments] [options]", "",
        "Schema migrations for Kronos on PostgreSQL (Alembic's verbs). `kronos VERB --help` describes a verb.",
        "", "Verbs:" }
    for _, name in ipairs(ORDER) do out[#out + 1] = ("   %-10s %s"):format(name, VERBS[name].summary) end
    out[#out + 1] = ""
    out[#out + 1] = "Options (before or after the verb):"
    for _, o in ipairs(OPTIONS) do
        local common = false
        for _, k in ipairs(COMMON) do common = common or k == o.key end
        if common then out[#out + 1] = option_line(o) end
    end
    out[#out + 1] = "   --version                          Print the version and exit."
    out[#out + 1] = ""
    out[#out + 1] = EXIT_HELP
    return table.concat(out, "\n") .. "\n"
end

-- argv -> args: {verb =, positional = {...}, <option keys>, x = {key = value}}. Options go before
-- or after the verb; "-1", "-2" (relative downgrade targets) are arguments, not options; "--" ends
-- the options.
local function parse(argv)
    local args = { positional = {}, given = {} }
    local i, n = 1, #argv
    local only_args = false
    while i <= n do
        local a = argv[i]
        if only_args or a == "-" or not a:match("^%-") or a:match("^%-%d") then
            if args.verb == nil and not only_args then
                args.verb = a
            else
                args.positional[#args.positional + 1] = a
            end
        elseif a == "--" then
            only_args = true
        elseif a == "--version" then
            args.version = true
        else
            local flag, value = a:match("^(%-%-[^=]+)=(.*)$")
            if not flag then
                flag = a
                if not a:match("^%-%-") and #a > 2 then flag, value = a:sub(1, 2), a:sub(3) end
            end
            local o = BY_FLAG[flag]
            if not o then usage_error(("unknown option '%s'"):format(flag)) end
            if o.value then
                if value == nil then
                    i = i + 1
                    value = argv[i]
                    if value == nil then usage_error(("option '%s' needs a %s"):format(flag, o.value)) end
                end
                if o.many then
                    local k, v = value:match("^([^=]+)=(.*)$")
                    if not k then usage_error(("option '%s' takes KEY=VALUE, not '%s'"):format(flag, value)) end
                    args[o.key] = args[o.key] or {}
                    args[o.key][k] = v
                else
                    args[o.key] = value
                end
            elseif value ~= nil then
                usage_error(("option '%s' takes no value"):format(flag))
            else
                args[o.key] = true
            end
            args.given[o.key] = flag
        end
        i = i + 1
    end
    return args
end

-- Checks args against the verb's definition; raises a usage error naming what is wrong.
local function validate(v, args)
    for key, flag in pairs(args.given) do
        if not v.accepts[key] then usage_error(("option '%s' is not an option of '%s'"):format(flag, v.name)) end
    end
    for key in pairs(v.required or {}) do
        if args[key] == nil then
            for _, o in ipairs(OPTIONS) do
                if o.key == key then usage_error(("'%s' needs %s"):format(v.name, o[1] or o[2])) end
            end
        end
    end
    local specs = v.args or {}
    local pos = args.positional
    local k = 1
    for _, a in ipairs(specs) do
        if a[2] == "+" then
            if pos[k] == nil then usage_error(("'%s' needs %s"):format(v.name, a[1] .. "...")) end
            local many = {}
            while pos[k] ~= nil do
                many[#many + 1] = pos[k]
                k = k + 1
            end
            args[a[1]:lower()] = many
        elseif pos[k] ~= nil then
            args[a[1]:lower()] = pos[k]
            k = k + 1
        elseif a[2] == "1" then
            usage_error(("'%s' needs %s"):format(v.name, a[1]))
        end
    end
    if pos[k] ~= nil then usage_error(("unexpected argument '%s' for '%s'"):format(pos[k], v.name)) end
end
M.parse = parse

-- ---- shared pieces of the verbs --------------------------------------------------------------

local function migrate() return require("kronos.migrate") end

-- The options of kronos.migrate from the command line.
local function opts_of(args)
    return {
        url = args.database_url,
        dir = args.dir,
        version_table = args.version_table,
        target = args.target,
        sql = args.sql or nil,
        lock_timeout = args.lock_timeout,
        statement_timeout = args.statement_timeout,
        transaction_per_migration = args.per_migration or nil,
        allow_changed = args.allow_changed or nil,
        purge = args.purge or nil,
        x = args.x,
    }
end

local function connect(args)
    local db, err = lazy_core().connect(args.database_url)
    if not db then error(err, 0) end
    return db
end

-- fn(db) on one connection for the whole verb, closed afterwards whatever happens.
local function with_db(args, fn)
    local db = connect(args)
    local ok, a, b = pcall(fn, db)
    db:close()
    if not ok then error(a, 0) end
    return a, b
end

local function list(revs)
    return #revs > 0 and table.concat(revs, ", ") or "base"
end

-- "b2 (head)", "a1, c3", "base": where the database is.
local function where(current, heads)
    if #current == 0 then return "base" end
    local is_head = {}
    for _, h in ipairs(heads) do is_head[h] = true end
    local out = {}
    for i, r in ipairs(current) do out[i] = one_line(r) .. (is_head[r] and " (head)" or "") end
    return table.concat(out, ", ")
end

local function down_text(down)
    if down == nil then return "<base>" end
    if type(down) == "table" then return "(" .. table.concat(down, ", ") .. ")" end
    return down
end

local function parents_of(down)
    if down == nil then return {} end
    if type(down) == "table" then return down end
    return { down }
end

-- A migration file without down cannot be reverted; said when files are loaded by check and revision.
local function warn_missing_down(history)
    local missing = {}
    for _, h in ipairs(history) do
        if h.has_down == false then
            missing[#missing + 1] = h.revision
            warn(("%s: revision '%s' has no down function: it cannot be downgraded"):format(h.file, h.revision))
        end
    end
    return missing
end

-- ---- upgrade, downgrade, createdb: progress and the truth after a failure -------------------------

-- The event handler that prints each step as it starts and remembers what happened, for the
-- summary and the failure report.
local function progress(quiet)
    local seen = { committed = {}, transactional = {}, order = {}, ms = 0 }
    function seen.on_event(ev)
        local t = ev.type
        if t == "step_start" then
            seen.order[#seen.order + 1] = ev.revision
            seen.transactional[ev.revision] = ev.transactional ~= false
            seen.last = ev.revision
            if not quiet then
                if ev.direction == "downgrade" then
                    say("downgrade ", one_line(ev.revision), " -> ", one_line(ev.from or "base"), ", ", one_line(ev.message or ""))
                else
                    say("upgrade ", one_line(ev.from or "base"), " -> ", one_line(ev.revision), ", ", one_line(ev.message or ""))
                end
            end
        elseif t == "step_done" then
            seen.ms = seen.ms + (tonumber(ev.ms) or 0)
        elseif t == "commit" then
            for _, r in ipairs(ev.revisions or {}) do seen.committed[r] = true end
        elseif t == "lock_wait" then
            say(("waiting for the migration lock, held by pid %s (application_name %q) for %s s"):format(
                tostring(ev.holder_pid or "?"), one_line(ev.holder_application_name or ""),
                ev.held_seconds and ("%.0f"):format(ev.held_seconds) or "?"))
        end
    end
    return seen
end

-- After a failed run: what stayed and what was rolled back, from the error (err.kept,
-- err.rolled_back) or else from the events seen. One line on stdout, before the error on stderr.
local function report_failure(err, seen, per_migration)
    local kept, rolled = {}, {}
    if type(err) == "table" and type(err.kept) == "table" then
        kept, rolled = err.kept, err.rolled_back or {}
    else
        for _, r in ipairs(seen.order) do
            if seen.committed[r] then kept[#kept + 1] = r else rolled[#rolled + 1] = r end
        end
    end
    if #kept == 0 and #rolled == 0 then return end
    local out = {}
    if #kept == 0 then
        out[1] = per_migration and "nothing kept" or "nothing kept (the run was one transaction)"
    else
        local text = {}
        for i, r in ipairs(kept) do
            text[i] = one_line(r) .. (seen.transactional[r] == false and " (transactional = false: committed on its own)" or "")
        end
        out[1] = "kept (committed): " .. table.concat(text, ", ")
    end
    local back, outside = {}, {}
    for _, r in ipairs(rolled) do
        if seen.transactional[r] == false then outside[#outside + 1] = one_line(r) else back[#back + 1] = one_line(r) end
    end
    if #back > 0 then out[#out + 1] = "rolled back: " .. table.concat(back, ", ") end
    if #outside > 0 then
        out[#out + 1] = table.concat(outside, ", ") .. " failed outside a transaction: what it did before failing stays"
    end
    say("failed: ", table.concat(out, "; "))
end

-- The hint the command line adds to an engine error.
local function teach(err)
    if type(err) == "table" and err.code == "changed_migration" and not tostring(err.message):find("--allow-changed", 1, true) then
        err.message = tostring(err.message) .. " (kronos: --allow-changed runs anyway; `kronos repair` records the new checksum)"
    end
    return err
end

local function heads_of(m, files, opts)
    return m.heads(setmetatable({ files = files }, { __index = opts }))
end

-- upgrade/downgrade on db: the steps as they start, then "now at X; N applied in T ms".
local function move(cmd, args, db)
    local m = migrate()
    local opts = opts_of(args)
    local files = m.load(opts.dir)
    opts.files = files
    opts.db = db
    local seen = progress(false)
    opts.on_event = seen.on_event
    local ok, res = pcall(m[cmd], opts)
    if not ok then
        report_failure(res, seen, args.per_migration)
        error(teach(res), 0)
    end
    local heads = heads_of(m, files, opts)
    local current
    if cmd == "upgrade" and (opts.target == nil or opts.target == "head" or opts.target == "heads") then
        current = heads -- every revision is below a head, and the run reached them all
    else
        current = m.current(opts)
    end
    if #res == 0 then
        say(("now at %s; nothing to %s"):format(where(current, heads), cmd))
    else
        say(("now at %s; %d %s in %d ms"):format(where(current, heads), #res,
            cmd == "upgrade" and "applied" or "reverted", math.floor(seen.ms + 0.5)))
    end
end

-- ---- the verbs --------------------------------------------------------------------------------

local run = {}

function run.init(args)
    local dir = args.dir or os.getenv("KRONOS_MIGRATIONS")
    if dir == nil or dir == "" then dir = "migrations" end
    dir = dir:gsub("/+$", "")
    local probe = io.open(dir .. "/.", "r")
    if probe then
        probe:close()
        local p = io.popen(("ls -A %s 2>/dev/null"):format("'" .. dir:gsub("'", "'\\''") .. "'"))
        local listing = p:read("a")
        p:close()
        if listing ~= "" then fail("exists", dir .. " exists and is not empty: nothing created") end
    else
        local okmk = os.execute(("mkdir -p %s"):format("'" .. dir:gsub("'", "'\\''") .. "'"))
        if not okmk then fail("io", "cannot create " .. dir) end
    end
    say("created ", one_line(dir), "/")
    say("next: kronos revision -m \"create my table\" --dir ", one_line(dir),
        "; then kronos createdb (or upgrade) with DATABASE_URL set")
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

-- createdb: connect; if the database is missing, create it from the maintenance database first.
local function ensure_database(url)
    local core = lazy_core()
    local db, err = core.connect(url)
    if db then return db end
    local name = dbname_of(url or os.getenv("DATABASE_URL"))
    if not (name and tostring(err.message):find("does not exist", 1, true)) then error(err, 0) end
    local admin, aerr = core.connect({ url = url, dbname = "postgres" })
    if not admin then error(aerr, 0) end
    local ok, cerr = admin:exec("CREATE DATABASE " .. admin:escape_identifier(name))
    admin:close()
    -- another `kronos createdb` may have created it in the meantime: 42P04, or 23505 on the
    -- catalog's unique index when both CREATE DATABASE ran at the same moment
    local raced = not ok and (cerr.sqlstate == "42P04" or
        (cerr.sqlstate == "23505" and cerr.constraint == "pg_database_datname_index"))
    if not ok and not raced then error(cerr, 0) end
    if ok then say("created database ", one_line(name)) end
    db, err = core.connect(url)
    if not db then error(err, 0) end
    return db
end

function run.createdb(args)
    local db = ensure_database(args.database_url)
    local ok, err = pcall(move, "upgrade", args, db)
    db:close()
    if not ok then error(err, 0) end
end

local function moving(cmd)
    return function(args)
        if args.sql then
            io.stdout:write(migrate()[cmd](opts_of(args)))
            return
        end
        with_db(args, function(db) move(cmd, args, db) end)
    end
end
run.upgrade = moving("upgrade")
run.downgrade = moving("downgrade")

-- The status of the database on one connection.
local function status_of(args)
    local opts = opts_of(args)
    return with_db(args, function(db)
        opts.db = db
        return migrate().status(opts)
    end)
end

local function index_history(history)
    local by = {}
    for _, h in ipairs(history) do by[h.revision] = h end
    return by
end

function run.current(args)
    local s = status_of(args)
    local by = index_history(s.history)
    if args.json then
        say(to_json({ current = array(s.current), heads = array(s.heads), unknown = array(s.unknown),
            at_head = #s.pending == 0 and #s.unknown == 0 }))
    else
        if #s.current == 0 and #s.unknown == 0 then say("base (no revision applied)") end
        for _, rev in ipairs(s.current) do
            local h = by[rev]
            say(one_line(rev), h.head and " (head)" or "")
            if args.verbose then
                say("    ", one_line(h.message), "; ", one_line(h.file), "; applied ", tostring(h.applied_at),
                    h.execution_ms and (" in " .. h.execution_ms .. " ms") or "")
            end
        end
        for _, rev in ipairs(s.unknown) do say(one_line(rev), " (unknown: no migration file provides it)") end
    end
    if #s.unknown > 0 then
        fail("unknown_revision", ("the database has revision(s) that no migration file provides: %s "
            .. "(another --dir, or migrations of a newer release?)"):format(table.concat(s.unknown, ", ")))
    end
end

local function offline_status(args)
    local opts = opts_of(args)
    opts.offline = true
    local m = migrate()
    return { history = m.history(opts) }
end

function run.heads(args)
    local hist = offline_status(args).history
    local heads = array()
    for _, h in ipairs(hist) do
        if h.head then heads[#heads + 1] = { revision = h.revision, message = h.message, file = h.file } end
    end
    if args.json then return say(to_json({ heads = heads })) end
    for _, h in ipairs(heads) do
        if args.verbose then
            say(one_line(h.revision), " (head), ", one_line(h.message), " (", one_line(h.file), ")")
        else
            say(one_line(h.revision), " (", one_line(h.file), ")")
        end
    end
end

local function children_of(hist)
    local kids = {}
    for _, h in ipairs(hist) do
        for _, p in ipairs(parents_of(h.down_revision)) do
            kids[p] = kids[p] or {}
            table.insert(kids[p], h.revision)
        end
    end
    return kids
end

function run.branches(args)
    local hist = offline_status(args).history
    local by, kids = index_history(hist), children_of(hist)
    local any = false
    for i = #hist, 1, -1 do
        local h = hist[i]
        local c = kids[h.revision]
        if c and #c > 1 then
            any = true
            say(one_line(h.revision), " (branch point), ", one_line(h.message))
            for _, r in ipairs(c) do
                say("    -> ", one_line(r), by[r].head and " (head)" or "", ", ", one_line(by[r].message),
                    args.verbose and (" (" .. one_line(by[r].file) .. ")") or "")
            end
        end
    end
    if not any then say("no branch points") end
end

local function tags_of(h)
    local tags = {}
    if h.head then tags[#tags + 1] = "head" end
    if h.current then tags[#tags + 1] = "current" end
    if h.changed then tags[#tags + 1] = "CHANGED" end
    return tags
end

local function state_of(h, online)
    if not online then return nil end
    if not h.applied then return "pending" end
    return "applied " .. tostring(h.applied_at) .. (h.execution_ms and (" in " .. h.execution_ms .. " ms") or "")
end

local function describe(h, kids, online)
    local tags = tags_of(h)
    local lines = {
        "Rev: " .. one_line(h.revision) .. (#tags > 0 and " (" .. table.concat(tags, ", ") .. ")" or ""),
        "Parent: " .. one_line(down_text(h.down_revision)),
    }
    local c = kids[h.revision]
    if c and #c > 0 then lines[#lines + 1] = (#c > 1 and "Branches into: " or "Child: ") .. one_line(table.concat(c, ", ")) end
    if type(h.down_revision) == "table" then lines[#lines + 1] = "Merge point" end
    lines[#lines + 1] = "Path: " .. one_line(h.file)
    if h.transactional == false then lines[#lines + 1] = "Transactional: no (runs outside a transaction)" end
    if h.has_down == false then lines[#lines + 1] = "Down: none (cannot be downgraded)" end
    if online then lines[#lines + 1] = "State: " .. state_of(h, online) end
    lines[#lines + 1] = ""
    lines[#lines + 1] = "    " .. one_line(h.message)
    return table.concat(lines, "\n")
end

function run.history(args)
    local hist, unknown, online = nil, {}, false
    local core = lazy_core()
    local db = core.connect(args.database_url)
    local m = migrate()
    local opts = opts_of(args)
    if db then
        opts.db = db
        local ok, s = pcall(m.status, opts)
        db:close()
        if not ok then error(s, 0) end
        hist, unknown, online = s.history, s.unknown, true
    else
        opts.offline = true
        hist = m.history(opts)
        if not args.json then warn("no database reachable: the applied state is not shown") end
    end
    if args.json then
        local out = array()
        for i = #hist, 1, -1 do
            local h = hist[i]
            out[#out + 1] = { revision = h.revision, down_revision = array(parents_of(h.down_revision)),
                message = h.message, file = h.file, head = h.head, transactional = h.transactional,
                applied = online and h.applied or nil, current = online and h.current or nil,
                changed = online and h.changed or nil, applied_at = h.applied_at, execution_ms = h.execution_ms }
        end
        return say(to_json({ history = out, unknown = array(unknown), database = online }))
    end
    for _, rev in ipairs(unknown) do say("? -> ", one_line(rev), " (current, unknown: no migration file provides it)") end
    local kids = args.verbose and children_of(hist)
    for i = #hist, 1, -1 do
        local h = hist[i]
        if args.verbose then
            say(describe(h, kids, online))
            if i > 1 then say("") end
        else
            local tags = tags_of(h)
            local state = state_of(h, online)
            say(("%s -> %s%s, %s%s"):format(one_line(down_text(h.down_revision)), one_line(h.revision),
                #tags > 0 and " (" .. table.concat(tags, ", ") .. ")" or "", one_line(h.message),
                state and " [" .. state .. "]" or ""))
        end
    end
end

-- A revision of hist by id, unique prefix or "head".
local function find_revision(hist, spec)
    local heads, found = {}, {}
    for _, h in ipairs(hist) do
        if h.head then heads[#heads + 1] = h end
        if h.revision == spec then return h end
        if h.revision:sub(1, #spec) == spec then found[#found + 1] = h end
    end
    if spec == "head" then
        if #heads == 1 then return heads[1] end
        fail("multiple_heads", "there are several heads: " .. #heads .. "; name one")
    end
    if #found == 1 then return found[1] end
    if #found > 1 then fail("ambiguous_revision", ("'%s' is a prefix of several revisions"):format(spec)) end
    fail("unknown_revision", ("no migration file has revision '%s'"):format(spec))
end

function run.show(args)
    local hist = offline_status(args).history
    local h = find_revision(hist, args.rev)
    say(describe(h, children_of(hist), false))
end

function run.stamp(args)
    if args.sql then
        io.stdout:write(migrate().stamp(opts_of(args)))
        return
    end
    with_db(args, function(db)
        local opts = opts_of(args)
        opts.db = db
        local res = migrate().stamp(opts)
        say("stamped: ", list(res))
    end)
end

function run.check(args)
    local s = status_of(args)
    local missing = warn_missing_down(s.history)
    local code = #s.unknown > 0 and EXIT_UNKNOWN or #s.changed > 0 and EXIT_CHANGED or #s.pending > 0 and EXIT_PENDING or EXIT_OK
    if args.json then
        say(to_json({ ok = code == EXIT_OK, exit = code, current = array(s.current), pending = array(s.pending),
            changed = array(s.changed), unknown = array(s.unknown), missing_down = array(missing) }))
        return code
    end
    if code == EXIT_OK then
        say("up to date")
        return code
    end
    local parts = {}
    if #s.pending > 0 then parts[#parts + 1] = #s.pending .. " pending: " .. table.concat(s.pending, ", ") end
    if #s.changed > 0 then
        parts[#parts + 1] = "changed since applied: " .. table.concat(s.changed, ", ")
            .. " (--allow-changed runs anyway; `kronos repair` records the new checksums)"
    end
    if #s.unknown > 0 then parts[#parts + 1] = "unknown to the files: " .. table.concat(s.unknown, ", ") end
    io.stderr:write("kronos: not up to date (", one_line(table.concat(parts, "; ")), ")\n")
    return code
end

local function write_revision(args, parents)
    local m = migrate()
    local path, hist = m.revision { dir = args.dir, message = args.message, revision = args.rev_id, down_revision = parents }
    if hist then warn_missing_down(hist) end
    say("created ", one_line(path))
end

function run.revision(args) write_revision(args, nil) end

function run.merge(args)
    local revs = args.rev
    local hist = offline_status(args).history
    local parents = {}
    if #revs == 1 and revs[1] == "heads" then
        for _, h in ipairs(hist) do
            if h.head then parents[#parents + 1] = h.revision end
        end
    else
        for _, spec in ipairs(revs) do parents[#parents + 1] = find_revision(hist, spec).revision end
    end
    if #parents < 2 then fail("bad_target", "merge needs two or more revisions (there is one head: nothing to merge)") end
    write_revision(args, parents)
end

function run.repair(args)
    with_db(args, function(db)
        local opts = opts_of(args)
        opts.db = db
        local res = migrate().repair(opts)
        if #res == 0 then
            say("nothing to repair: every applied file matches its recorded checksum")
        else
            say("recorded the new checksum of: ", table.concat(res, ", "))
        end
    end)
end

function run.console(args)
    local console = require "kronos.console"
    with_db(args, function(db)
        console.start(db, { dir = args.dir, version_table = args.version_table })
    end)
end

-- ---- main -------------------------------------------------------------------------------------

local function error_line(err)
    if type(err) == "table" and err.usage == nil then return one_line(teach(err)) end
    return one_line(err)
end

function M.main(argv)
    local ok, args = pcall(parse, argv or {})
    local v
    if ok then
        if args.version and not args.verb then
            say(lazy_core()._VERSION)
            return EXIT_OK
        end
        if args.verb == nil then
            if args.help then
                io.stdout:write(main_help())
                return EXIT_OK
            end
            ok, args = false, { usage = "a verb is required (upgrade, downgrade, current, ...)" }
        else
            v = VERBS[args.verb]
            if not v then
                ok, args = false, { usage = ("unknown command '%s'"):format(args.verb) }
            elseif args.help then
                io.stdout:write(verb_help(v))
                return EXIT_OK
            else
                ok, args = pcall(function()
                    validate(v, args)
                    return args
                end)
            end
        end
    end
    if not ok then
        if type(args) ~= "table" or not args.usage then error(args, 0) end
        io.stderr:write(v and verb_usage(v) or "Usage: kronos [options] VERB [arguments] [options]",
            "\n\nkronos: ", one_line(args.usage), " (kronos ", v and v.name .. " " or "", "--help)\n")
        return EXIT_USAGE
    end
    local done, res = pcall(run[v.name], args)
    if not done then
        io.stderr:write("kronos: ", error_line(res), "\n")
        return EXIT_FAIL
    end
    return res or EXIT_OK
end

return M
