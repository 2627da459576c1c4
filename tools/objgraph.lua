-- Prints which object file of kronos.core uses which (from `nm`: the symbols each defines and
-- each needs) and fails when the graph has a cycle: files depend on each other in one
-- direction. Run by `make lint`. --allow a,b,c tolerates (with a warning) a cycle whose files are
-- all among a, b, c: a known one its owner is untangling, listed in the Makefile with a reason.
--   lua tools/objgraph.lua OBJDIR [--quiet] [--allow file,file,...]...
local dir = assert(arg[1], "usage: objgraph.lua OBJDIR [--quiet] [--allow file,file,...]...")
local quiet, allowed = false, {}
local i = 2
while arg[i] do
    if arg[i] == "--quiet" then
        quiet = true
    elseif arg[i] == "--allow" and arg[i + 1] then
        local set = {}
        for f in arg[i + 1]:gmatch("[^,]+") do set[f] = true end
        allowed[#allowed + 1] = set
        i = i + 1
    else
        error("objgraph.lua: unknown argument " .. arg[i])
    end
    i = i + 1
end

local function run(cmd)
    local p = assert(io.popen(cmd))
    local out = p:read("a")
    local ok, _, code = p:close()
    if not ok then error(("%s failed (%s)"):format(cmd, tostring(code))) end
    return out
end

local files, defined, needs = {}, {}, {}
for path in run(("ls %s/*.o"):format(dir)):gmatch("[^\n]+") do
    local name = path:match("([^/]+)%.o$")
    files[#files + 1] = name
    needs[name] = {}
    for line in run(("nm -P %s"):format(path)):gmatch("[^\n]+") do
        local sym, kind = line:match("^(%S+) (%a)")
        if kind == "U" then
            needs[name][sym] = true
        elseif kind and kind:match("%u") then
            defined[sym] = name
        end
    end
end
table.sort(files)
if #files == 0 then io.stderr:write("objgraph: no objects in ", dir, " (build first)\n") os.exit(2) end

-- edges[a][b] = the symbols a takes from b
local edges = {}
for _, a in ipairs(files) do
    edges[a] = {}
    for sym in pairs(needs[a]) do
        local b = defined[sym]
        if b and b ~= a then
            edges[a][b] = edges[a][b] or {}
            table.insert(edges[a][b], sym)
        end
    end
end

if not quiet then
    for _, a in ipairs(files) do
        local outs = {}
        for b in pairs(edges[a]) do outs[#outs + 1] = b end
        table.sort(outs)
        print(("%-16s -> %s"):format(a, table.concat(outs, " ")))
    end
end

-- Tarjan's strongly connected components: any with more than one file is a cycle.
local index, low, onstack, stack, n, cycles = {}, {}, {}, {}, 0, {}
local function connect(v)
    n = n + 1
    index[v], low[v] = n, n
    stack[#stack + 1] = v
    onstack[v] = true
    for w in pairs(edges[v]) do
        if not index[w] then
            connect(w)
            low[v] = math.min(low[v], low[w])
        elseif onstack[w] then
            low[v] = math.min(low[v], index[w])
        end
    end
    if low[v] == index[v] then
        local comp = {}
        repeat
            local w = table.remove(stack)
            onstack[w] = false
            comp[#comp + 1] = w
        until w == v
        if #comp > 1 then
            table.sort(comp)
            cycles[#cycles + 1] = comp
        end
    end
end
for _, f in ipairs(files) do
    if not index[f] then connect(f) end
end

local function tolerated(comp)
    for _, set in ipairs(allowed) do
        local all = true
        for _, f in ipairs(comp) do all = all and set[f] == true end
        if all then return true end
    end
    return false
end

local failed = false
for _, comp in ipairs(cycles) do
    local ok = tolerated(comp)
    failed = failed or not ok
    local inside = {}
    for _, f in ipairs(comp) do inside[f] = true end
    io.stderr:write(ok and "objgraph: warning: allowed " or "objgraph: ", "cycle between ",
        table.concat(comp, ", "), "\n")
    for _, a in ipairs(comp) do
        for b, syms in pairs(edges[a]) do
            if inside[b] then
                table.sort(syms)
                io.stderr:write(("  %s -> %s: %s\n"):format(a, b, table.concat(syms, " ")))
            end
        end
    end
end
if not failed and not quiet then print(("objgraph: %d object files, no cycle but the allowed"):format(#files)) end
os.exit(failed and 1 or 0)
