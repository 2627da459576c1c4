-- kronos.uuid() and kronos.is_uuid() (src/uuid.c).
local kronos = require "kronos"
local H = require "spec.helper"

describe("kronos uuid", function()
    local dbname, conn

    setup(function()
        local url
        url, dbname = H.fresh_db("uuid")
        conn = assert(kronos.connect(url))
    end)

    teardown(function()
        conn:close()
        H.drop_db(dbname)
    end)

    it("makes random version 4 UUIDs in lowercase canonical form", function()
        local seen = {}
        for _ = 1, 1000 do
            local u = kronos.uuid()
            assert.matches("^%x%x%x%x%x%x%x%x%-%x%x%x%x%-4%x%x%x%-[89ab]%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x$", u)
            assert.are.equal(u:lower(), u)
            assert.is_nil(seen[u])
            seen[u] = true
        end
    end)

    -- ids come from a pool drawn from the kernel 256 at a time; a forked process (an OpenResty
    -- worker, forked from a master that drew ids in init_by_lua) must not hand out the ids its
    -- parent's pool still holds. LuaJIT's FFI forks this very process.
    if H.luajit then
        it("a forked process draws its own ids, never the ones its parent's pool holds", function()
            local ffi = require "ffi"
            ffi.cdef [[int fork(void); void _exit(int); int waitpid(int, int *, int);]]
            local path = os.tmpname()
            for _ = 1, 3 do
                kronos.uuid() -- the pool is drawn, and holds ids for later calls
                local pid = ffi.C.fork()
                if pid == 0 then
                    local f = io.open(path, "w")
                    f:write(kronos.uuid(), " ", kronos.uuid())
                    f:close()
                    ffi.C._exit(0)
                end
                assert.is_true(pid > 0)
                ffi.C.waitpid(pid, nil, 0)
                local mine = { [kronos.uuid()] = true, [kronos.uuid()] = true }
                local theirs = H.read_file(path)
                local a, b = theirs:match("^(%S+) (%S+)$")
                assert.is_true(kronos.is_uuid(a) and kronos.is_uuid(b), theirs)
                assert.is_nil(mine[a])
                assert.is_nil(mine[b])
            end
            os.remove(path)
        end)
    end

    it("makes what the server reads as the same uuid, of version 4", function()
        local u = kronos.uuid()
        local r = conn:exec("SELECT $1::uuid AS u, substr($1::uuid::text, 15, 1) AS version", u)[1]
        assert.are.same({ u = u, version = "4" }, r)
    end)

    it("tells valid UUIDs from anything else", function()
        assert.is_true(kronos.is_uuid("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"))
        assert.is_true(kronos.is_uuid("A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11"))
        assert.is_true(kronos.is_uuid(kronos.uuid()))
        for _, bad in ipairs({ "", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a111",
            "a0eebc999c0b4ef8bb6d6bb9bd380a11", "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}",
            "g0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "a0eebc99-9c0b-4ef8-bb6d_6bb9bd380a11",
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1\0" }) do
            assert.is_false(kronos.is_uuid(bad), bad)
        end
        assert.is_false(kronos.is_uuid(nil))
        assert.is_false(kronos.is_uuid(12))
        assert.is_false(kronos.is_uuid({}))
    end)

    it("agrees with the server on what is valid", function()
        for _, s in ipairs({ "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1x" }) do
            local r = conn:exec("SELECT $1::uuid AS u", s)
            assert.are.equal(kronos.is_uuid(s), r ~= nil)
        end
    end)
end)
