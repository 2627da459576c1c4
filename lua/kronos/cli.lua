-- kronos.cli: the `kronos` command (bin/kronos), Alembic's verbs over kronos.migrate.
-- main(argv) returns the exit code: 0 success, 1 failure (one line `kronos: <error>` on stderr),
-- 2 usage; `check` adds 3 (pending), 4 (changed files), 5 (revisions no file provides).
--
-- Startup matters (a service runs `kronos upgrade` on every start): the argument parser is the
-- small table-driven one below (no argparse); this file holds only what upgrade and downgrade
-- need (parsing Lua source costs about 150 instructions a byte), the other verbs and the help are
-- in kronos.cli_verbs; the C module is loaded only by verbs that need it; a run opens one
-- connection and reads the migration files once.
local M = {}

local EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2
local EXIT_PENDING, EXIT_CHANGED, EXIT_UNKNOWN = 3, 4, 5
M.exit_codes = { ok = EXIT_OK, failure = EXIT_FAIL, usage = EXIT_USAGE, pending = EXIT_PENDING,
    changed = EXIT_CHANGED, unknown = EXIT_UNKNOWN }

-- ---- output ---------------------------------------------------------------------------------

-- Text from outside (messages, errors, revision ids) as one line: a control byte would break a
-- log line, so it is escaped as tostring(err) escapes it (\n, \t, \r, \ddd: kronos.core's one
-- escaping); text without one is printed as it is, with no need to load the core.
local function one_line(s)
    s = tostring(s)
    if not s:find("%c") then return s end
    return require("kronos.core").one_line(s)
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

-- ---- the command line ----------------------------------------------------------------------

-- Every option: the key it sets in args, whether it takes a value, and its help.
local OPTIONS = {
    { "-d", "--database-url", key = "database_url", value = "URL",
        help = "Database URL or libpq conninfo (default: $DATABASE_URL, then the PG* variables)." },
    { nil, "--dir", key = "dir", value = "DIR", list = true,
        help = "Migrations directory, repeatable (default: $KRONOS_MIGRATIONS, ':'-separated, else ./migrations)." },
    { nil, "--module", key = "module", value = "NAME", list = true,
        help = "Lua module of migrations (e.g. kronos.migrations), repeatable." },
    { nil, "--version-table", key = "version_table", value = "NAME",
        help = "Name of the version table (default: kronos_version)." },
    { "-x", nil, key = "x", value = "KEY=VALUE", many = true,
        help = "Hand KEY=VALUE to the migrations as op.x.KEY (repeatable)." },
    { nil, "--sql", key = "sql", help = "Print the SQL instead of running it (offline: no database)." },
    { nil, "--lock-timeout", key = "lock_timeout", value = "DURATION",
        help = "How long to wait for another process's migration lock (default: 60s)." },
    { nil, "--statement-timeout", key = "statement_timeout", value = "DURATION",
        help = "statement_timeout for the migrations (default: the server's)." },
    { nil, "--retries", key = "retries", value = "N",
        help = "Retry a step whose lock wait ran out (lock_timeout) N times, with backoff (default: 0)." },
    { nil, "--per-migration", key = "per_migration",
        help = "Commit after each migration instead of running the whole run as one transaction." },
    { nil, "--allow-changed", key = "allow_changed",
        help = "Run even though files of applied migrations have changed since they were applied." },
    { nil, "--purge", key = "purge",
        help = "Delete every row of the version table first (also revisions no file provides)." },
    { "-m", "--message", key = "message", value = "MESSAGE", help = "What the migration does." },
    { nil, "--rev-id", key = "rev_id", value = "ID", help = "Use this revision id instead of a random one." },
    { nil, "--drift", key = "drift",
        help = "Compare the live schema with what its applied migrations build in a scratch database (exit 1 on drift)." },
    { nil, "--scratch-url", key = "scratch_url", value = "URL",
        help = "An empty database to build in (default: kronos creates and drops one on the server)." },
    { "-v", "--verbose", key = "verbose", help = "Show more: every field of each revision; lint: the allowed findings." },
    { nil, "--json", key = "json", help = "Print JSON for scripts instead of text." },
    { "-h", "--help", key = "help", help = "Show this help and exit." },
}
local BY_FLAG = {}
for _, o in ipairs(OPTIONS) do
    if o[1] then BY_FLAG[o[1]] = o end
    if o[2] then BY_FLAG[o[2]] = o end
end

local COMMON = { "database_url", "dir", "module", "version_table", "help" }

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
    args = { { "DIR", "?", "The directory to create (default: the first --dir, of $KRONOS_MIGRATIONS, else ./migrations).",
        key = "init_dir" } },
    details = "Refuses a directory that exists and is not empty. Creates no database: see createdb.",
})
verb("createdb", {
    summary = "Create the database if it does not exist (from the `postgres` database), then upgrade to head.",
    options = { "lock_timeout", "statement_timeout", "per_migration", "retries", "x" },
})
verb("upgrade", {
    summary = "Upgrade the database to TARGET (default: head).",
    args = { { "TARGET", "?", "head, heads, a revision or unique prefix, +N (the next N), REV+N; "
        .. "with --sql also FROM:TO." } },
    options = { "sql", "lock_timeout", "statement_timeout", "per_migration", "retries", "x", "allow_changed" },
})
verb("downgrade", {
    summary = "Downgrade the database to TARGET (required: `base` reverts everything).",
    args = { { "TARGET", "1", "base, a revision or unique prefix, -N (the last N applied), REV-N; "
        .. "with --sql FROM:TO, such as head:base." } },
    options = { "sql", "lock_timeout", "statement_timeout", "per_migration", "retries", "x" },
})
verb("finish", {
    summary = "Run the pending finish of every applied two-phase migration (once every instance runs the new code).",
    args = { { "TARGET", "?", "With --sql: FROM:TO, the finishes of TO's lineage not in FROM's." } },
    options = { "sql", "lock_timeout", "statement_timeout", "per_migration", "retries", "x" },
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
    options = { "json", "drift", "scratch_url" },
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
verb("verify", {
    summary = "On a scratch database, check that every migration's down undoes its up (exit 1 names the first that does not).",
    options = { "scratch_url" },
})
verb("lint", {
    summary = "Check the migrations' DDL for locks and rewrites of busy tables, offline (exit 1 on blocking findings).",
    options = { "verbose" },
})
verb("repair", {
    summary = "Accept edits to applied migration files: record their current checksums (Flyway's repair).",
})
verb("console", { summary = "A Lua console with kronos, db and users ready (line editing when lua-readline is installed)." })

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
                if o.list then
                    args[o.key] = args[o.key] or {}
                    table.insert(args[o.key], value)
                elseif o.many then
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
            args[a.key or a[1]:lower()] = many
        elseif pos[k] ~= nil then
            args[a.key or a[1]:lower()] = pos[k]
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
        modules = args.module,
        version_table = args.version_table,
        target = args.target,
        sql = args.sql or nil,
        lock_timeout = args.lock_timeout,
        retries = args.retries and (tonumber(args.retries) or -1), -- not a number: refused by the engine side
        statement_timeout = args.statement_timeout,
        transaction_per_migration = args.per_migration or nil,
        allow_changed = args.allow_changed or nil,
        purge = args.purge or nil,
        x = args.x,
        -- the DDL safety check's findings on the migrations a run applies (kronos.deploy)
        on_lint = function(f) warn(f.text) end,
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

-- "b2 (head)", "a1, c3", "base": where the database is.
local function where(current, heads)
    if #current == 0 then return "base" end
    local is_head = {}
    for _, h in ipairs(heads) do is_head[h] = true end
    local out = {}
    for i, r in ipairs(current) do out[i] = one_line(r) .. (is_head[r] and " (head)" or "") end
    return table.concat(out, ", ")
end

-- ---- upgrade, downgrade, createdb: progress and the truth after a failure -------------------------

-- The event handler that prints each step as it starts and remembers what happened, for the
-- summary and the failure report.
local function progress()
    local seen = { committed = {}, transactional = {}, order = {}, ms = 0 }
    function seen.on_event(ev)
        local t = ev.type
        if t == "step_start" then
            local rev, message = one_line(ev.revision), one_line(ev.message or "")
            seen.order[#seen.order + 1] = ev.revision
            seen.transactional[ev.revision] = ev.transactional ~= false
            if ev.direction == "downgrade" then
                say("downgrade ", rev, " -> ", one_line(ev.from or "base"), ", ", message)
            else
                say("upgrade ", one_line(ev.from or "base"), " -> ", rev, ", ", message)
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
    local ended = type(err) == "table" and type(err.ended) == "table" and err.ended or {}
    if #kept == 0 and #rolled == 0 and #ended == 0 then return end
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
    if #ended > 0 then
        local text = {}
        for i, r in ipairs(ended) do text[i] = one_line(r) end
        out[#out + 1] = "committed or rolled back by the migration's own COMMIT or ROLLBACK: " .. table.concat(text, ", ")
            .. " (`kronos current` tells which)"
    end
    if #outside > 0 then
        out[#out + 1] = table.concat(outside, ", ") .. " failed outside a transaction: what it did before failing stays"
    end
    say("failed: ", table.concat(out, "; "))
end

-- The hint the command line adds to an engine error.
local function teach(err)
    local msg = type(err) == "table" and err.code == "changed_migration" and tostring(err.message)
    if msg and not msg:find("--allow-changed", 1, true) then
        err.message = msg .. " (kronos: --allow-changed runs anyway; `kronos repair` records the new checksum)"
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
    local files = m.load(opts)
    opts.files = files
    opts.db = db
    local seen = progress()
    opts.on_event = seen.on_event
    local ok, res = pcall(m[cmd], opts)
    if not ok then
        report_failure(res, seen, args.per_migration)
        if type(res) == "table" and type(res.ended) == "table" and #res.ended > 0 then
            -- what the migration's own COMMIT or ROLLBACK left: read it, rather than guess
            local rok, current = pcall(m.current, opts)
            if rok then say(("the database is now at %s"):format(where(current, heads_of(m, files, opts)))) end
        end
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

-- ---- the verbs: upgrade and downgrade here (the path a service runs at every start), the others in
-- kronos.cli_verbs, loaded only when one of them runs

local run = {}

local function moving(cmd)
    return function(args)
        if args.sql then
            io.stdout:write((migrate()[cmd](opts_of(args))))
            return
        end
        with_db(args, function(db) move(cmd, args, db) end)
    end
end
run.upgrade = moving("upgrade")
run.downgrade = moving("downgrade")

-- What kronos.cli_verbs needs of this file (it does not require it: one direction).
local function context()
    return { one_line = one_line, say = say, warn = warn, fail = fail, lazy_core = lazy_core, migrate = migrate,
        opts_of = opts_of, with_db = with_db, move = move,
        OPTIONS = OPTIONS, VERBS = VERBS, ORDER = ORDER, COMMON = COMMON, exit_codes = M.exit_codes }
end

local verbs
local function verbs_module()
    verbs = verbs or require("kronos.cli_verbs")(context())
    return verbs
end

setmetatable(run, { __index = function(_, name) return verbs_module().run[name] end })

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
            say("kronos ", lazy_core()._VERSION)
            return EXIT_OK
        end
        if args.verb == nil then
            if args.help then
                io.stdout:write(verbs_module().main_help())
                return EXIT_OK
            end
            ok, args = false, { usage = "a verb is required (upgrade, downgrade, current, ...)" }
        else
            v = VERBS[args.verb]
            if not v then
                ok, args = false, { usage = ("unknown command '%s'"):format(args.verb) }
            elseif args.help then
                io.stdout:write(verbs_module().verb_help(v))
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
        io.stderr:write(v and verbs_module().verb_usage(v) or "Usage: kronos [options] VERB [arguments] [options]",
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
