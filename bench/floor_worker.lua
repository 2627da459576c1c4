-- The Lua floor of a read (bench/floor.c), one case per process, as the kronos worker reports:
--   lua5.4|luajit bench/floor_worker.lua URL SHAPE N     the typed rows (bench/common.lua)
--   lua5.4|luajit bench/floor_worker.lua URL SHAPE table the bench's table of typed rows
-- SHAPE: named | arrays | columns
local floor = require "floor"
local C = require "bench.common"

local url, shape, what = arg[1], arg[2], arg[3]
local sql = what == "table" and C.TYPED_TABLE_SQL or C.typed_sql(tonumber(what))
local all, elapsed = floor.read(url, sql, shape)
local rows, check
check = 0
if shape == "columns" then
    local t = all[2]
    for i = 1, all.n do check = check + #t[i] end
    rows = all.n
elseif shape == "arrays" then
    for i = 1, #all do check = check + #all[i][2] end
    rows = #all
else
    for i = 1, #all do check = check + #all[i].t end
    rows = #all
end
C.report(elapsed, rows, check, { rss_kb = C.vmhwm() })
