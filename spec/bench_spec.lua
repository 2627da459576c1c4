-- `make bench` as the README shows it, on its smallest subset (BENCH_CASES=select1): the script
-- installs what it needs, builds its own copies, starts its own server, measures kronos, LuaSQL
-- and C side by side and prints the row with its ratios; a subset leaves bench/results.md (the
-- committed full run) alone. Under Lua 5.4 only: the bench drives both interpreters itself.
-- Left out of the memory runs (tools/memory-specs.sh): its kronos runs in its own processes.
local H = require "spec.helper"

describe("make bench", function()
    if H.luajit then return end

    it("runs a subset: the case's row with kronos, peer and limit, and bench/results.md left alone", function()
        local results = H.root .. "/bench/results.md"
        local before = H.read_file(results)
        -- the suite's own build (make test made it), instead of the bench's private copies
        local code, out = H.run(("cd %s && BENCH_BUILD=build BENCH_RUNS=5 BENCH_CASES=select1 make -s bench"):format(
            H.shell_quote(H.root)))
        assert.equal(0, code, out)
        local k, p, l, vp, vl = out:match('conn:exec%("select 1"%) round trips%s+([%d.]+)k/s%s+([%d.]+)k/s %(LuaSQL%)%s+'
            .. '([%d.]+)k/s %(C PQexec%)%s+([%d.]+)x%s+([%d.]+)x')
        assert.is_not_nil(k, out)
        for _, v in ipairs { k, p, l, vp, vl } do assert.is_true(tonumber(v) > 0, out) end
        assert.matches("(subset run: written to bench/work/results.md, bench/results.md left alone)", out, 1, true)
        assert.equal(before, H.read_file(results))
        assert.matches('conn:exec("select 1") round trips', H.read_file(H.root .. "/bench/work/results.md"), 1, true)
    end)
end)
