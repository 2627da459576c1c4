-- make bench, case "pipeline": N single-row INSERTs through kronos, conn:exec in a loop or one
-- conn:pipeline (a Sync per statement, the default). Prints elapsed= rows= check= like pipebench.
--   lua5.4 bench/pipeline_worker.lua URL loop|pipeline N
local kronos = require "kronos"
local benchlib = require "benchlib"

local url, mode, n = arg[1], arg[2], tonumber(arg[3])
local conn = assert(kronos.connect(url))
assert(conn:exec("CREATE TABLE IF NOT EXISTS bench_pipe (id int, v text)"))
assert(conn:exec("TRUNCATE bench_pipe"))
local sql = "INSERT INTO bench_pipe (id, v) VALUES ($1, $2)"
local t0 = benchlib.now()
if mode == "loop" then
    for i = 1, n do assert(conn:exec(sql, i, "value " .. i)) end
else
    local r = assert(conn:pipeline(function(p)
        for i = 1, n do p:exec(sql, i, "value " .. i) end
    end))
    assert(r.failed == 0)
end
local t1 = benchlib.now()
local c = conn:exec("SELECT count(*) AS n, coalesce(sum(id), 0) AS s FROM bench_pipe")[1]
io.write(("elapsed=%.6f rows=%d check=%d\n"):format(t1 - t0, c.n, c.s))
conn:close()
