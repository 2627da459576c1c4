-- kronos-scm-1.rockspec: lists every C source and Lua module, and installs offline with luarocks.
local H = require "spec.helper"

local function q(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

local function load_rockspec()
    local env = {}
    local chunk = assert(loadfile(H.root .. "/kronos-scm-1.rockspec", "t", env))
    if setfenv then setfenv(chunk, env) end -- LuaJIT: loadfile ignores env
    chunk()
    return env
end

local function listing(pattern)
    local code, out = H.run("cd " .. q(H.root) .. " && ls " .. pattern)
    assert.are.equal(0, code, out)
    local files = {}
    for f in out:gmatch("[^\n]+") do files[#files + 1] = f end
    table.sort(files)
    return files
end

describe("kronos-scm-1.rockspec", function()
    local spec = load_rockspec()

    it("builds kronos.core from every src/*.c", function()
        local sources = {}
        for _, s in ipairs(spec.build.modules["kronos.core"].sources) do sources[#sources + 1] = s end
        table.sort(sources)
        assert.are.same(listing("src/*.c"), sources)
    end)

    it("installs every lua/kronos/*.lua under its module name, and bin/kronos", function()
        local files = {}
        for name, file in pairs(spec.build.modules) do
            if type(file) == "string" then
                local want = name == "kronos" and "lua/kronos/init.lua" or ("lua/" .. name:gsub("%.", "/") .. ".lua")
                assert.are.equal(want, file)
                files[#files + 1] = file
            end
        end
        table.sort(files)
        assert.are.same(listing("lua/kronos/*.lua"), files)
        assert.are.same({ kronos = "bin/kronos" }, spec.build.install.bin)
    end)

    it("installs offline with luarocks make, and the tree's kronos works", function()
        local tree = os.tmpname()
        os.remove(tree)
        local work = tree .. "-src"
        -- a copy of the checkout, so the build's objects stay out of it
        local code, out = H.run(("mkdir -p %s && cd %s && tar -cf - kronos-scm-1.rockspec src lua bin | tar -xf - -C %s && " ..
            "cd %s && luarocks --lua-version 5.4 make --tree %s kronos-scm-1.rockspec")
            :format(q(work), q(H.root), q(work), q(work), q(tree)))
        finally(function() H.run("rm -rf " .. q(tree) .. " " .. q(work)) end)
        assert.are.equal(0, code, out)
        local probe = ([[local k = require "kronos"
            assert(package.searchpath("kronos.core", package.cpath):find(%q, 1, true))
            local c = assert(k.connect(%q))
            io.write(k._VERSION, " ", c:exec("SELECT 40 + 2 AS v")[1].v)]]):format(tree, H.base_url)
        code, out = H.run(("eval \"$(luarocks --lua-version 5.4 --tree %s path)\" && lua5.4 -e %s")
            :format(q(tree), q(probe)))
        assert.are.equal(0, code, out)
        assert.are.equal("kronos 0.1.0 42", out)
        code, out = H.run(q(tree .. "/bin/kronos") .. " --help")
        assert.are.equal(0, code, out)
        assert.matches("Usage: kronos", out)
    end)
end)
