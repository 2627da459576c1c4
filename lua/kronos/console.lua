-- kronos.console: an interactive Lua session for admins, with `kronos`, `db` (the connection)
-- and `users` (the user model on it) in scope. Expressions print their values; users print
-- through their __tostring, lists of users one per line, errors as one line.
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
    if n == 0 then return false end
    for k in pairs(t) do
        if type(k) ~= "number" or k < 1 or k > n or k % 1 ~= 0 then return false end
    end
    return true
end

local function has_tostring(v)
    local mt = getmetatable(v)
    return type(mt) == "table" and mt.__tostring ~= nil
end

-- One value as readable text: users and errors by their __tostring, arrays one item per line,
-- other tables as a sorted constructor.
local function show(v, indent)
    indent = indent or ""
    local t = type(v)
    if t == "string" then return ("%q"):format(v) end
    if v == kronos.null then return "kronos.null" end
    if t ~= "table" or has_tostring(v) then return tostring(v) end
    if is_array(v) then
        local lines = {}
        for i = 1, #v do lines[i] = indent .. "  [" .. i .. "] " .. show(v[i], indent .. "  ") end
        return "{ -- " .. #v .. " items\n" .. table.concat(lines, "\n") .. "\n" .. indent .. "}"
    end
    local keys = {}
    for k in pairs(v) do keys[#keys + 1] = k end
    table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
    local parts = {}
    for _, k in ipairs(keys) do
        local key = type(k) == "string" and k:match("^[%a_][%w_]*$") and k or "[" .. show(k) .. "]"
        parts[#parts + 1] = key .. " = " .. show(v[k], indent .. "  ")
    end
    if #parts == 0 then return "{}" end
    return "{ " .. table.concat(parts, ", ") .. " }"
end
M.show = show

local function pack(...)
    return { n = select("#", ...), ... }
end

local function incomplete(err)
    return err:find("<eof>", 1, true) ~= nil
end

-- start(conn [, {input = file, output = file, prompt = "kronos> "}]): reads statements until end of
-- input or `exit`; returns the environment the session ran in.
function M.start(conn, opts)
    opts = opts or {}
    local input, output = opts.input or io.stdin, opts.output or io.stdout
    local prompt = opts.prompt or "kronos> "
    local env = setmetatable({
        kronos = kronos,
        db = conn,
        users = kronos.users(conn),
        show = show,
    }, { __index = _G })
    output:write(("kronos console (%s): kronos, db, users are ready; `exit` or end of input quits\n")
        :format(tostring(conn)))
    local buffer = nil
    while true do
        output:write(buffer and ">> " or prompt)
        output:flush()
        local line = input:read("*l")
        if line == nil then output:write("\n") break end
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
                    output:write(tostring(res[2]), "\n")
                else
                    for i = 2, res.n do output:write(show(res[i]), "\n") end
                end
            end
        end
    end
    return env
end

return M
