-- kronos.console: an interactive Lua session for admins, with `kronos`, `db` (the connection)
-- and `users` (the user model on it) in scope. Expressions print their values: users through
-- their __tostring, query results as a table, lists one item per line, errors as one line.
-- At a terminal it edits lines and keeps history through lua-readline when that is installed
-- (Debian's lua-readline), else it reads plain lines.
local kronos = require "kronos"

local M = {}

local load = load
if _VERSION == "Lua 5.1" and not pcall(load, "return 1", "=x", "t", {}) then
    -- plain Lua 5.1 (LuaJIT accepts the 5.2 arguments): emulate load(string, name, mode, env)
    local loadstring, setfenv = loadstring, setfenv
    load = function(src, name, _, env)
        local f, err = loadstring(src, name)
        if f and env then setfenv(f, env) end
        return f, err
    end
end

local function is_array(t)
    local n = #t
    for k in pairs(t) do
        if type(k) ~= "number" or k < 1 or k > n or k % 1 ~= 0 then return false end
    end
    return true
end

local function has_tostring(v)
    local mt = getmetatable(v)
    return type(mt) == "table" and mt.__tostring ~= nil
end

local show

-- A query result (conn:exec's rows: an array of rows with .columns) as an aligned text table.
local function show_rows(rows)
    local cols = rows.columns
    local width, cells = {}, {}
    for c, name in ipairs(cols) do width[c] = #name end
    for r = 1, #rows do
        cells[r] = {}
        for c, name in ipairs(cols) do
            local v = rows[r][name]
            local text = v == nil and "" or type(v) == "string" and v or show(v)
            text = text:gsub("%c", " ")
            cells[r][c] = text
            if #text > width[c] then width[c] = #text end
        end
    end
    local function line(values)
        local out = {}
        for c = 1, #cols do out[c] = values[c] .. (" "):rep(width[c] - #values[c]) end
        return (" " .. table.concat(out, " | ")):gsub("%s+$", "")
    end
    local out = { line(cols) }
    local rule = {}
    for c = 1, #cols do rule[c] = ("-"):rep(width[c] + 2) end
    out[2] = table.concat(rule, "+")
    for r = 1, #rows do out[#out + 1] = line(cells[r]) end
    out[#out + 1] = ("(%d row%s%s)"):format(#rows, #rows == 1 and "" or "s",
        rows.affected and #cols == 0 and (", " .. rows.affected .. " affected") or "")
    return table.concat(out, "\n")
end

-- One value as readable text.
show = function(v, indent)
    indent = indent or ""
    local t = type(v)
    if t == "string" then return (("%q"):format(v):gsub("\\\n", "\\n")) end
    if v == kronos.null then return "kronos.null" end
    if t ~= "table" or has_tostring(v) then return tostring(v) end
    if type(v.columns) == "table" and is_array(v.columns) then return show_rows(v) end
    if next(v) == nil then return "{}" end
    if is_array(v) then
        local lines = {}
        for i = 1, #v do lines[i] = ("%s[%d] %s"):format(indent, i, show(v[i], indent .. "    ")) end
        lines[#lines + 1] = ("%s(%d item%s)"):format(indent, #v, #v == 1 and "" or "s")
        return table.concat(lines, "\n")
    end
    local keys = {}
    for k in pairs(v) do keys[#keys + 1] = k end
    table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
    local parts = {}
    for _, k in ipairs(keys) do
        local key = type(k) == "string" and k:match("^[%a_][%w_]*$") and k or "[" .. show(k) .. "]"
        local value = v[k]
        local text = type(value) == "table" and not has_tostring(value) and is_array(value) and next(value) ~= nil
            and "{ " .. (function()
                local items = {}
                for i = 1, #value do items[i] = show(value[i]) end
                return table.concat(items, ", ")
            end)() .. " }"
            or show(value, indent .. "  ")
        parts[#parts + 1] = key .. " = " .. text
    end
    return "{ " .. table.concat(parts, ", ") .. " }"
end
M.show = show

local function pack(...)
    return { n = select("#", ...), ... }
end

local function incomplete(err)
    return err:find("<eof>", 1, true) ~= nil
end

local function sorted_names(t, filter)
    local names = {}
    for k, v in pairs(t) do
        if type(k) == "string" and (not filter or filter(k, v)) then names[#names + 1] = k end
    end
    table.sort(names)
    return names
end

-- What `help` prints: the objects in scope, their functions, and what the session defined.
local function help_text(env, conn, users)
    local function methods(obj)
        local mt = getmetatable(obj)
        local index = type(mt) == "table" and mt.__index
        if type(index) ~= "table" then return "" end
        return table.concat(sorted_names(index, function(k, f) return type(f) == "function" and k:sub(1, 1) ~= "_" end), ", ")
    end
    local lines = {
        "In scope:",
        "  kronos   the module: " .. table.concat(sorted_names(kronos, function(_, v) return type(v) == "function" end), ", ")
            .. "; kronos.migrate (status, upgrade, ...)",
        "  db       the connection: db:" .. methods(conn):gsub(", ", ", db:"),
        "  users    the user model: users:" .. methods(users):gsub(", ", ", users:"),
        "  show(v)  the text the console prints for v",
        "  help     this text; exit (or end of input) quits",
    }
    local mine = sorted_names(rawget(env, "__defined") or {})
    lines[#lines + 1] = "Defined in this session: " .. (#mine > 0 and table.concat(mine, ", ") or "nothing yet")
    lines[#lines + 1] = "An expression prints its value; `db:exec(\"SELECT ...\")` prints the rows as a table."
    return table.concat(lines, "\n")
end

-- The warning printed at start when the database is not at head (or cannot be compared).
local function head_warning(conn, opts)
    local ok, up, why = pcall(require("kronos.migrate").check,
        { db = conn, dir = opts.dir, modules = opts.modules, version_table = opts.version_table })
    if not ok then
        return "warning: cannot compare the database with the migrations: " .. tostring(up):gsub("%c", " ")
    end
    if up then return nil end
    local parts = {}
    if #why.pending > 0 then parts[#parts + 1] = #why.pending .. " pending: " .. table.concat(why.pending, ", ") end
    if #why.changed > 0 then parts[#parts + 1] = "changed since applied: " .. table.concat(why.changed, ", ") end
    if #why.unknown > 0 then parts[#parts + 1] = "unknown to the files: " .. table.concat(why.unknown, ", ") end
    return "warning: the database is not at head (" .. table.concat(parts, "; ") .. "); `kronos upgrade` applies what is pending"
end

-- The line reader: readline at a terminal when lua-readline is installed, else plain lines.
local function reader(input, output, opts)
    if opts.input == nil and opts.readline ~= false then
        local ok, rl = pcall(require, "readline")
        local tty = ok and (opts.readline == true or (function()
            local r = os.execute("[ -t 0 ]") -- true (Lua 5.2+) or 0 (LuaJIT, 5.1) when stdin is a terminal
            return r == true or r == 0
        end)())
        if ok and tty then
            rl.set_options { histfile = opts.histfile or "~/.kronos_history", keeplines = 1000, completion = false }
            return function(prompt)
                local line = rl.readline(prompt)
                return line
            end, function() rl.save_history() end
        end
    end
    return function(prompt)
        output:write(prompt)
        output:flush()
        return input:read("*l")
    end, function() end
end

-- start(conn [, {input =, output =, prompt = "kronos> ", dir =, modules =, version_table =, check = true,
-- readline =, histfile =}]): reads statements until end of input or `exit`; returns the
-- environment the session ran in.
function M.start(conn, opts)
    opts = opts or {}
    local input, output = opts.input or io.stdin, opts.output or io.stdout
    local prompt = opts.prompt or "kronos> "
    local users = kronos.users(conn)
    local defined = {}
    local env
    local help = setmetatable({}, {
        __tostring = function() return help_text(env, conn, users) end,
        __call = function() output:write(help_text(env, conn, users), "\n") end,
    })
    env = setmetatable({ kronos = kronos, db = conn, users = users, show = show, help = help, __defined = defined },
        {
            __index = _G,
            __newindex = function(t, k, v)
                defined[k] = true
                rawset(t, k, v)
            end,
        })
    output:write(("kronos console (%s): kronos, db, users are ready; `help` lists them, `exit` or end of input quits\n")
        :format(tostring(conn)))
    if opts.check ~= false then
        local w = head_warning(conn, opts)
        if w then output:write(w, "\n") end
    end
    local read, finish = reader(input, output, opts)
    local buffer = nil
    while true do
        local line = read(buffer and ">> " or prompt)
        if line == nil then
            output:write("\n")
            break
        end
        if buffer == nil and (line == "exit" or line == "quit") then break end
        local src = buffer and (buffer .. "\n" .. line) or line
        -- an expression prints its values; otherwise the text runs as a statement
        local f, err = load("return " .. src, "=console", "t", env)
        if not f then f, err = load(src, "=console", "t", env) end
        if not f and incomplete(err) then
            buffer = src
        else
            buffer = nil
            if not f then
                output:write(err, "\n")
            else
                local res = pack(pcall(f))
                if not res[1] then
                    output:write((tostring(res[2]):gsub("[\r\n]+", " ")), "\n")
                else
                    for i = 2, res.n do output:write(show(res[i]), "\n") end
                end
            end
        end
    end
    finish()
    return env
end

return M
