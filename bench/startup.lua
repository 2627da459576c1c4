-- The kronos side of the migration cases, run as a new process as a service or admin would:
--   lua5.4 bench/startup.lua URL DIR           require kronos, connect, upgrade to head
--   lua5.4 bench/startup.lua - DIR sql FILE    write upgrade's offline SQL (base -> head) to FILE
-- Prints applied=<number of migrations applied>.
local kronos = require "kronos"

local url, dir, mode, file = arg[1], arg[2], arg[3], arg[4]
if mode == "sql" then
    local sql = assert(require("kronos.migrate").upgrade{ dir = dir, sql = true })
    local f = assert(io.open(file, "w"))
    f:write(type(sql) == "table" and table.concat(sql, "\n") or sql, "\n")
    f:close()
    io.write("applied=0\n")
    return
end
local conn = assert(kronos.connect(url))
local applied = require("kronos.migrate").upgrade{ db = conn, dir = dir }
conn:close()
io.write("applied=", #applied, "\n")
