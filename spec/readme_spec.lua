-- Runs every ```lua example of the README's binding section against a real server: the examples
-- assert their own results, so a README that drifts from the code fails here.
local kronos = require "kronos"
local H = require "spec.helper"

local function examples()
    local readme = assert(H.read_file(H.root .. "/README.md"))
    local section = assert(readme:match("<!%-%- section:binding %-%->(.-)<!%-%- /section:binding %-%->"))
    local list = {}
    for code in section:gmatch("```lua\n(.-)```") do list[#list + 1] = code end
    return list
end

describe("README binding examples", function()
    local url, dbname, conn

    setup(function()
        url, dbname = H.fresh_db("readme")
        conn = assert(kronos.connect(url))
    end)

    teardown(function()
        conn:close()
        H.drop_db(dbname)
    end)

    local list = examples()

    it("has the examples", function()
        assert.is_true(#list >= 6)
    end)

    for i, code in ipairs(list) do
        it(("example %d runs"):format(i), function()
            local env = setmetatable({ conn = conn, url = url, kronos = kronos }, { __index = _G })
            local chunk = assert((loadstring or load)(code, "=README example " .. i, "t", env))
            if setfenv then setfenv(chunk, env) end
            chunk()
        end)
    end
end)
