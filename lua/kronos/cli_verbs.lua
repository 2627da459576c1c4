-- kronos.cli_verbs: the verbs of the `kronos` command other than upgrade and downgrade, and the
-- help texts. kronos.cli loads this file only when one of them runs, so that a service's
-- `kronos upgrade` at every start does not parse it. It receives what it shares with kronos.cli
-- as a context table K (this file does not require kronos.cli).
return function(K)
local one_line, say, warn, fail, lazy_core, migrate = K.one_line, K.say, K.warn, K.fail, K.lazy_core, K.migrate
local opts_of, with_db, move = K.opts_of, K.with_db, K.move
local OPTIONS, VERBS, ORDER, COMMON = K.OPTIONS, K.VERBS, K.ORDER, K.COMMON
local EXIT_FAIL = K.exit_codes.failure
local EXIT_OK, EXIT_PENDING, EXIT_CHANGED, EXIT_UNKNOWN = K.exit_codes.ok, K.exit_codes.pending,
    K.exit_codes.changed, K.exit_codes.unknown

local run = {}

local function list(revs)
    return #revs > 0 and table.concat(revs, ", ") or "base"
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

function run.init(args)
    local dir = args.init_dir or args.dir and args.dir[1] or (os.getenv("KRONOS_MIGRATIONS") or ""):match("^[^:]+")
    if dir == nil then dir = "migrations" end
    dir = dir:gsub("/+$", "")
    local probe = io.open(dir .. "/.", "r")
    if probe then
        probe:close()
        local p = io.popen(("ls -A %s 2>/dev/null"):format("'" .. dir:gsub("'", "'\\''") .. "'"))
        local listing = p:read("a")
        p:close()
        if listing ~= "" then fail("exists", dir .. " exists and is not empty: nothing created") end
    else
        local r = os.execute(("mkdir -p %s"):format("'" .. dir:gsub("'", "'\\''") .. "'"))
        if r ~= true and r ~= 0 then fail("io", "cannot create " .. dir) end -- Lua 5.4: true; LuaJIT: 0
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
            finish_pending = array(s.finish_pending or {}), at_head = #s.pending == 0 and #s.unknown == 0 }))
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
        if #(s.finish_pending or {}) > 0 then -- two-phase migrations: up applied, finish not yet run
            say("finish pending: ", table.concat(s.finish_pending, ", "))
        end
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
    if h.finish_pending then tags[#tags + 1] = "finish pending" elseif h.finished then tags[#tags + 1] = "finished" end
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
    local hist, unknown, online
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
        hist, unknown, online = m.history(opts), {}, false
        if not args.json then warn("no database reachable: the applied state is not shown") end
    end
    if args.json then
        local out = array()
        for i = #hist, 1, -1 do
            local h = hist[i]
            out[#out + 1] = { revision = h.revision, down_revision = array(parents_of(h.down_revision)),
                message = h.message, file = h.file, head = h.head, transactional = h.transactional,
                applied_at = h.applied_at, execution_ms = h.execution_ms }
            if online then
                out[#out].applied, out[#out].current, out[#out].changed = h.applied, h.current, h.changed
            end
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
        io.stdout:write((migrate().stamp(opts_of(args))))
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
    if args.drift then return require("kronos.deploy").cli_drift(args) end
    local s = status_of(args)
    local missing = warn_missing_down(s.history)
    local code = #s.unknown > 0 and EXIT_UNKNOWN or #s.changed > 0 and EXIT_CHANGED or #s.pending > 0 and EXIT_PENDING or EXIT_OK
    if args.json then
        say(to_json({ ok = code == EXIT_OK, exit = code, current = array(s.current), pending = array(s.pending),
            changed = array(s.changed), unknown = array(s.unknown), missing_down = array(missing),
            finish_pending = array(s.finish_pending or {}) }))
        return code
    end
    if code == EXIT_OK then
        local fp = s.finish_pending or {}
        say("up to date", #fp > 0 and (" (finish pending: " .. table.concat(fp, ", ") .. ")") or "")
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
    local path, hist = m.revision { dir = args.dir, modules = args.module, message = args.message, revision = args.rev_id,
        down_revision = parents }
    if hist then warn_missing_down(hist) end
    say("created ", one_line(path))
    require("kronos.deploy").warn_heads({ dir = args.dir, modules = args.module }, path, function(f) warn(f.text) end)
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

-- finish: the pending finishes of two-phase migrations (after every instance runs the new code).
function run.finish(args)
    local opts = opts_of(args)
    if args.sql then
        io.stdout:write((migrate().finish(opts)))
        return
    end
    opts.log = function(line) say(one_line(line)) end
    local res = migrate().finish(opts)
    if #res == 0 then say("nothing to finish") end
end

function run.verify(args)
    return require("kronos.deploy").cli_verify(args)
end

-- lint: the findings that block (exit 1), the notes; --verbose adds the allowed ones.
function run.lint(args)
    local found, blocking = migrate().lint { dir = args.dir, modules = args.module }
    local allowed = 0
    for _, f in ipairs(found) do
        if f.allowed then allowed = allowed + 1 end
        if not f.allowed or args.verbose then say(f.level, ": ", one_line(f.text)) end
    end
    say(("%d finding(s)"):format(blocking), allowed > 0 and
        (", %d allowed by safe%s"):format(allowed, args.verbose and "" or " (--verbose lists them)") or "")
    return blocking > 0 and EXIT_FAIL or EXIT_OK
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
        console.start(db, { dir = args.dir, modules = args.module, version_table = args.version_table })
    end)
end

return { run = run, main_help = main_help, verb_help = verb_help, verb_usage = verb_usage }
end
