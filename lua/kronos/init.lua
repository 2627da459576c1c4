-- kronos: PostgreSQL for Lua over libpq, with a migration engine and the Kronos user model.
-- The work is done in C (kronos.core); this file only assembles the module.
local core = require "kronos.core"

-- core's internals (the engine behind kronos.migrate, the users constructor) stay in core.
local internal = { migrate = true, users_new = true }
local kronos = {}
for name, value in pairs(core) do
    if not internal[name] then kronos[name] = value end
end

-- kronos.users(conn) -> the user model bound to an open connection.
function kronos.users(conn)
    return require("kronos.users").new(conn)
end

-- kronos.migrate is loaded on first use (require "kronos.migrate" works as well).
return setmetatable(kronos, {
    __index = function(t, key)
        if key == "migrate" then
            local m = require "kronos.migrate"
            rawset(t, key, m)
            return m
        end
    end,
})
