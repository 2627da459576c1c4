-- kronos.migrate: schema migrations over a revision graph. The engine (graph, targets, plan,
-- version table, locking, the run loop) is C in kronos.core.migrate; this file loads the
-- migration files and assembles the API.
local core = require "kronos.core"
local engine = core.migrate

local M = {}

local function fail(code, message, fields)
    error(core.error(code, message, fields), 0)
end

-- Misuse of a public function's options: a bad_argument object naming that function and
-- opts.<key>, worded as the C side's option reader words it.
local function bad_option(fname, key, why)
    error(core.error("bad_argument", ("bad argument #1 to '%s' (opts.%s: %s)"):format(fname, key, why), { func = fname }), 0)
end
M.bad_option = bad_option

local function read_file(path)
    local f, err = io.open(path, "rb")
    if not f then fail("bad_migration", path .. ": " .. tostring(err), { file = path }) end
    local source = f:read("*a")
    f:close()
    return source
end

-- Lua 5.4 and LuaJIT both take a string, a chunk name and a mode; migrations see the globals.
local function load_chunk(source, name)
    return load(source, name, "t")
end

-- The sources of migrations: opts.dir (a directory or a list of them) and opts.modules (a list
-- of Lua module names). When neither is given: $KRONOS_MIGRATIONS (directories separated by ':'),
-- else ./migrations. Returns the list of directories and the list of module names. fname: the
-- public function called, named in errors.
local function sources(opts, fname)
    local dirs, modules = opts.dir, opts.modules
    if dirs == nil and modules == nil then
        local env = os.getenv("KRONOS_MIGRATIONS")
        dirs = {}
        for d in (env or ""):gmatch("[^:]+") do dirs[#dirs + 1] = d end
        if #dirs == 0 then dirs[1] = "./migrations" end
    end
    if type(dirs) == "string" then dirs = { dirs } end
    if type(modules) == "string" then modules = { modules } end
    for key, list in pairs { dir = dirs or {}, modules = modules or {} } do
        if type(list) ~= "table" then bad_option(fname, key, "a string or a list of strings expected") end
        for i, v in ipairs(list) do
            if type(v) ~= "string" or v == "" then
                bad_option(fname, ("%s[%d]"):format(key, i), "a non-empty string expected")
            end
        end
    end
    return dirs or {}, modules or {}
end

-- Runs the chunk of `source` (read from `path`) with `...` and returns what it returns.
local function evaluate(source, path, ...)
    local chunk, lerr = load_chunk(source, "@" .. path)
    if not chunk then fail("bad_migration", lerr, { file = path }) end
    local ok, value = pcall(chunk, ...)
    if not ok then
        fail("bad_migration", path .. ": the file raised an error: " .. tostring(value), { file = path })
    end
    return value
end

-- Appends every *.lua file of the directory, in file-name order.
local function load_dir(dir, list)
    local names, err = engine.scan(dir)
    if not names then error(err, 0) end
    for _, name in ipairs(names) do
        local path = dir:gsub("/+$", "") .. "/" .. name
        local source = read_file(path)
        list[#list + 1] = { file = path, checksum = engine.sha256(source), migration = evaluate(source, path) }
    end
end

-- Appends the migrations of module `name`, found on package.path like require finds it (but
-- evaluated afresh, not cached). The module returns a migration, or a list whose items are
-- migrations or names of further modules. The checksum of every migration is over the source
-- file of the module that holds it, so a migration reads the same from a module as from a
-- directory holding the same file. seen: the modules done (each loads once); stack: the chain
-- of modules being loaded (a cycle is an error).
local function load_module(name, list, seen, stack)
    if stack[name] then
        fail("bad_migration", ("migration module '%s' lists itself (through %s)"):format(name, table.concat(stack, " -> ")))
    end
    if seen[name] then return end
    seen[name] = true
    local path, serr = package.searchpath(name, package.path)
    if not path then
        local tried = serr:gsub("^%s+", ""):gsub("%s*\n%s*", "; ")
        fail("bad_migration", ("migration module '%s' not found on package.path (%s)"):format(name, tried),
            { module = name })
    end
    local source = read_file(path)
    local checksum = engine.sha256(source)
    local value = evaluate(source, path, name, path)
    if type(value) ~= "table" then
        fail("bad_migration", ("%s: migration module '%s' returned a %s, not a migration or a list")
            :format(path, name, type(value)), { file = path, module = name })
    end
    -- a list has items (or is empty); anything else is a migration, which the engine checks
    if value[1] == nil and next(value) ~= nil then
        list[#list + 1] = { file = path, checksum = checksum, migration = value }
        return
    end
    stack[name] = true
    stack[#stack + 1] = name
    for i, item in ipairs(value) do
        if type(item) == "string" then
            load_module(item, list, seen, stack)
        elseif type(item) == "table" then
            list[#list + 1] = { file = path, checksum = checksum, migration = item }
        else
            fail("bad_migration", ("%s: item %d of migration module '%s' is a %s, not a migration or a module name")
                :format(path, i, name, type(item)), { file = path, module = name })
        end
    end
    stack[name], stack[#stack] = nil, nil
end

-- Every migration of the sources (see `sources`): {file, checksum, migration}, the directories'
-- files first (in file-name order), then the modules'. The engine orders them by the graph.
-- opts may be a directory (a string) or nil. fname: the public function called (default "load").
function M.load(opts, fname)
    if opts == nil or type(opts) == "string" then opts = { dir = opts } end
    local dirs, modules = sources(opts, fname or "load")
    local list = {}
    for _, dir in ipairs(dirs) do load_dir(dir, list) end
    local seen = {}
    for _, name in ipairs(modules) do load_module(name, list, seen, {}) end
    return list
end

-- Runs fn(conn) on opts.db, or on a connection opened from opts.url and closed afterwards.
local function with_db(opts, fn)
    if opts.db then return fn(opts.db) end
    local db, err = core.connect(opts.url)
    if not db then error(err, 0) end
    local ok, a, b = pcall(fn, db)
    db:close()
    if not ok then error(a, 0) end
    return a, b
end

-- The revisions the database has not applied, as a set (offline: every one); status: the
-- engine's status when the caller read it already.
local function pending_set(list, opts, db, status)
    local set = {}
    if not db then
        for _, e in ipairs(list) do set[e.migration.revision] = true end
        return set
    end
    for _, rev in ipairs((status or engine.status(list, opts, db)).pending) do set[rev] = true end
    return set
end

-- The DDL safety check before an upgrade (kronos.deploy): warns, or refuses before anything runs.
local function check_upgrade(cmd, list, opts, db, status)
    if cmd ~= "upgrade" or opts.lint == false then return end
    local todo = pending_set(list, opts, db, status)
    -- nothing to run, nothing to check: a service's no-op upgrade at every start does not load kronos.deploy
    if not next(todo) then return end
    require("kronos.deploy").check_upgrade(list, opts, function() return todo end)
end

-- true when an online upgrade to head (or heads) has nothing to do: every revision applied, none
-- changed (unless allowed), none unknown. status is a read of committed state, so this is the
-- answer the locked run would give (a run in progress elsewhere has not committed: its
-- revisions read as pending, and the locked run waits for it). What the run would refuse (an
-- unknown or changed revision, 'head' among several heads) and an echo of its SQL take the run.
local function at_head(opts, status)
    local target = opts.target
    if opts.echo ~= nil or not (target == nil or target == "head" or target == "heads") then return false end
    local heads = #status.heads
    return heads > 0 and (heads == 1 or target == "heads") and #status.pending == 0 and #status.unknown == 0
        and (#status.changed == 0 or opts.allow_changed == true)
end

local function run(cmd, opts)
    opts = opts or {}
    if opts.retries ~= nil then require("kronos.deploy").check_retries(opts.retries, cmd) end
    local list = opts.files or M.load(opts, cmd)
    if opts.sql then
        check_upgrade(cmd, list, opts, nil)
        local _, out = engine.run(cmd, list, opts, nil, core.ddl)
        local text, statements = {}, {}
        for _, s in ipairs(out) do
            if type(s) == "table" then
                text[#text + 1] = s[1] .. "\n"
            else
                statements[#statements + 1] = s
                text[#text + 1] = s .. engine.terminator(s) .. "\n"
            end
        end
        return table.concat(text), statements
    end
    return with_db(opts, function(db)
        -- a service's upgrade at every start: one status read (one query), no lock, no transaction
        local status = cmd == "upgrade" and engine.status(list, opts, db)
        if status and at_head(opts, status) then return {} end
        check_upgrade(cmd, list, opts, db, status)
        local ok, res = pcall(engine.run, cmd, list, opts, db, core.ddl)
        if ok then return res end
        -- a lock wait that timed out: retried (opts.retries), else reported with who held the lock
        return require("kronos.deploy").after_failure(res, cmd, list, opts, db, function(o)
            return (engine.run(cmd, list, o, db, core.ddl))
        end)
    end)
end

-- upgrade{target = "head", ...} -> the revisions applied, in order (sql = true: the SQL text).
function M.upgrade(opts) return run("upgrade", opts) end

-- finish{...} -> the revisions whose finish ran, in graph order: every applied migration's
-- pending finish (two-phase migrations), under the same lock and transaction rules as upgrade.
function M.finish(opts) return run("finish", opts) end

-- downgrade{target = "base", ...} -> the revisions reverted, in order.
function M.downgrade(opts) return run("downgrade", opts) end

-- stamp{target = ..., purge = false} -> the database's revisions afterwards; runs no migration.
-- purge = true empties the version table first (Alembic's stamp --purge).
function M.stamp(opts)
    if not (opts and opts.target) then fail("bad_target", "stamp needs a target") end
    return run("stamp", opts)
end

local function status(opts, need_db, fname)
    opts = opts or {}
    local list = opts.files or M.load(opts, fname)
    if not need_db then return engine.status(list, opts, nil) end
    return with_db(opts, function(db) return engine.status(list, opts, db) end)
end

M.status = function(opts) return status(opts, true, "status") end

-- The revisions the database is at (its applied heads); empty at base. Revisions it records
-- that no file provides come last and are also listed in the result's field `unknown` (absent when there are none).
function M.current(opts)
    local s = status(opts, true, "current")
    local cur = s.current
    for _, rev in ipairs(s.unknown) do cur[#cur + 1] = rev end
    if #s.unknown > 0 then cur.unknown = s.unknown end
    return cur
end

-- The heads of the revision graph (no database needed).
function M.heads(opts) return status(opts, false, "heads").heads end

-- Every revision, oldest first, with message, file, applied, applied_at, execution_ms, head, current.
function M.history(opts)
    opts = opts or {}
    return status(opts, not opts.offline, "history").history
end

-- true when the database is at every head with unchanged files, else false, {pending, changed, unknown}.
-- Only finishes pending (two-phase migrations: up applied, finish not yet) is up to date for the
-- code: true, {finish_pending = {...}}, so an instance may start between upgrade and finish.
function M.check(opts)
    local s = status(opts, true, "check")
    if #s.pending == 0 and #s.changed == 0 and #s.unknown == 0 then
        if #s.finish_pending == 0 then return true end
        return true, { finish_pending = s.finish_pending, current = s.current }
    end
    return false, { pending = s.pending, changed = s.changed, unknown = s.unknown, current = s.current,
                    finish_pending = s.finish_pending }
end

-- repair{db = conn | url =} -> the revisions whose recorded checksum was replaced by their file's
-- (an intended edit of an applied migration, accepted once; Flyway's repair).
function M.repair(opts)
    opts = opts or {}
    local list = opts.files or M.load(opts, "repair")
    return with_db(opts, function(db) return engine.repair(list, opts, db) end)
end

local function slug(message)
    local s = message:lower():gsub("[^%w]+", "_"):gsub("^_+", ""):gsub("_+$", "")
    return s:sub(1, 40):gsub("_+$", "")
end

local function lua_list(revs)
    if #revs == 0 then return "nil" end
    if #revs == 1 then return ("%q"):format(revs[1]) end
    local q = {}
    for i, r in ipairs(revs) do q[i] = ("%q"):format(r) end
    return "{ " .. table.concat(q, ", ") .. " }"
end

-- What the revision template says about op, for authors who have not read the README.
local TEMPLATE_HELP = {
    "-- op.create_table(name, columns, {constraints =}), op.drop_table(name), op.rename_table(old, new),",
    "-- op.add_column(table, column), op.drop_column(table, name), op.alter_column(table, name, {type =,",
    "-- nullable =, server_default =, new_name =}), op.create_index(name, table, columns, {unique =,",
    "-- concurrently =}), op.drop_index(name), op.create_unique_constraint / create_check_constraint /",
    "-- create_foreign_key / create_primary_key / drop_constraint, op.execute(sql), op.sql(\"now()\")",
    "-- (a raw expression), op.db (the connection; nil offline), op.x (the CLI's -x KEY=VALUE).",
    "-- transactional = false runs it outside a transaction (needed by concurrently = true).",
}

-- revision{dir =, modules =, message =, revision =, down_revision =} writes a new migration into
-- the first directory of the sources, on top of the head of all of them, and returns its path and
-- the history of the migrations it found. Several heads are refused (code multiple_heads): a
-- merge names its parents in down_revision ({"a", "b"}).
function M.revision(opts)
    opts = opts or {}
    local message = opts.message
    if type(message) ~= "string" or message == "" then bad_option("revision", "message", "a non-empty string expected") end
    local dir = sources(opts, "revision")[1]
    if not dir then bad_option("revision", "dir", "a directory to write into expected") end
    local s = status({ dir = opts.dir, modules = opts.modules }, false)
    local parents = opts.down_revision
    if type(parents) == "string" then parents = { parents } end
    if parents == nil then
        parents = s.heads
        if #parents > 1 then
            fail("multiple_heads", ("there are several heads (%s): merge them first with `kronos merge -m MESSAGE heads` "
                .. "(or migrate.revision{down_revision = {...}})"):format(table.concat(parents, ", ")))
        end
    end
    local id = opts.revision or core.uuid():gsub("-", ""):sub(1, 12)
    local words = slug(message)
    local name = id .. (words ~= "" and "_" .. words or "") .. ".lua"
    local path = dir:gsub("/+$", "") .. "/" .. name
    local text = table.concat({
        "-- " .. message:gsub("[\r\n]+", " "),
        "-- Revision: " .. id,
        "-- Revises: " .. (#parents > 0 and table.concat(parents, ", ") or "(base)"),
        "-- Created: " .. os.date("!%Y-%m-%dT%H:%M:%SZ"),
        "--",
        table.concat(TEMPLATE_HELP, "\n"),
        "return {",
        "    revision = " .. ("%q"):format(id) .. ",",
        "    down_revision = " .. lua_list(parents) .. ",",
        "    message = " .. ("%q"):format(message):gsub("\\\n", "\\n") .. ",",
        "    up = function(op)",
        "    end,",
        "    down = function(op)",
        "    end,",
        "}",
        "",
    }, "\n")
    local f = io.open(path, "r")
    if f then
        f:close()
        fail("file_exists", path .. " already exists")
    end
    local err
    f, err = io.open(path, "w")
    if not f then fail("io", tostring(err)) end
    f:write(text)
    f:close()
    return path, s.history
end

-- lint{} (the DDL safety check), verify{} and drift{}: lua/kronos/deploy.lua.
for _, name in ipairs { "lint", "verify", "drift" } do
    M[name] = function(opts) return require("kronos.deploy")[name](opts) end
end

M.lock_key = engine.lock_key
M.sha256 = engine.sha256

return M
