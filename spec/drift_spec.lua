-- Drift (kronos check --drift, migrate.drift{}) and round trips (kronos verify, migrate.verify{}):
-- the schema the applied migrations build in a scratch database against the live one, and each
-- revision's up/down/up on a scratch database. Real server, real catalogs.
local H = require "spec.helper"
local migrate = require "kronos.migrate"

local USERS = H.root .. "/migrations/4f1c2a9e7b30_create_users_table.lua"

local cli = H.kronos

local NICK = [[
return {
    revision = "n2", down_revision = "4f1c2a9e7b30", message = "nickname",
    up = function(op)
        op.add_column("users", { name = "nickname", type = "text", server_default = "anon" })
        op.create_table("badge", { { name = "id", type = "bigserial", primary_key = true },
                                   { name = "user_id", type = "uuid", nullable = false } })
        op.create_foreign_key(nil, "badge", "users", { "user_id" }, { "id" }, { ondelete = "CASCADE", safe = true })
        op.create_index("ix_users_nickname", "users", { "nickname" }, { safe = true })
    end,
    down = function(op)
        %s
    end,
}
]]
local GOOD_DOWN = 'op.drop_table("badge") op.drop_column("users", "nickname")'

describe("drift and verify", function()
    local url, dbname, db, dir
    setup(function() url, dbname, db, dir = H.scratch("drift") end)
    teardown(function() H.drop_scratch(dbname, db, dir) end)

    local function files(down)
        H.sh("rm -f " .. H.shell_quote(dir) .. "/*.lua")
        H.sh(("cp %s %s/"):format(H.shell_quote(USERS), H.shell_quote(dir)))
        H.write_file(dir .. "/n2_nickname.lua", NICK:format(down or GOOD_DOWN))
    end

    local function scratch_dbs()
        local rows = assert(db:exec("SELECT datname FROM pg_database WHERE datname LIKE 'kronos\\_scratch\\_%'"))
        return #rows
    end

    it("finds no drift on a migrated database, then what a hand-made change did; the scratch is dropped", function()
        assert(db:script("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
        files()
        migrate.upgrade { db = db, dir = dir }
        local code, out, err = cli(("check --drift -d %q --dir %q"):format(url, dir))
        assert.equal(0, code, out .. err)
        assert.equal("no drift: the schema is what the migrations applied (n2) build\n", out)
        assert.equal(0, scratch_dbs())

        -- an incident: an index dropped, a column added, a default changed, a constraint loosened
        assert(db:script([[DROP INDEX ix_users_nickname; ALTER TABLE users ADD COLUMN hand integer;
            ALTER TABLE users ALTER COLUMN nickname SET DEFAULT 'x';
            ALTER TABLE badge DROP CONSTRAINT fk_badge_user_id_users]]))
        code, out, err = cli(("check --drift -d %q --dir %q"):format(url, dir))
        assert.equal(1, code, out)
        assert.equal(table.concat({
            "column public.users.hand is not expected (found integer NULL)",
            "column public.users.nickname differs: expected text NULL DEFAULT 'anon'::text, found text NULL DEFAULT 'x'::text",
            "constraint public.badge.fk_badge_user_id_users is missing (expected FOREIGN KEY (user_id) "
                .. "REFERENCES users(id) ON DELETE CASCADE)",
            "index public.ix_users_nickname is missing (expected CREATE INDEX ix_users_nickname ON public.users "
                .. "USING btree (nickname))",
            "" }, "\n"), out)
        assert.equal("kronos: drift: 4 difference(s) from what the migrations applied (n2) build\n", err)
        assert.equal(0, scratch_dbs())

        -- the API: the same differences as data
        local diffs, info = migrate.drift { url = url, dir = dir }
        assert.same({ "n2" }, info.current)
        assert.equal(4, #diffs)
        assert.equal("column", diffs[1].kind)
        assert.equal("public.users.hand", diffs[1].name)
        assert.is_nil(diffs[1].expected)
        assert.equal("integer NULL", diffs[1].actual)
    end)

    it("builds in a scratch database given by URL, which must be empty", function()
        assert(db:script("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
        files()
        migrate.upgrade { db = db, dir = dir, target = "4f1c2a9e7b30" }
        local surl, sname = H.fresh_db("scratch")
        local diffs, info = migrate.drift { db = db, dir = dir, scratch_url = surl }
        assert.same({}, diffs)
        assert.same({ "4f1c2a9e7b30" }, info.current) -- only what is applied, not the pending n2
        -- the scratch now holds the users table: refused next time
        local code, out, err = cli(("check --drift -d %q --dir %q --scratch-url %q"):format(url, dir, surl))
        assert.equal(1, code, out)
        assert.matches("^kronos: the scratch database is not empty %(it has ", err)
        H.drop_db(sname)
    end)

    it("verify: every revision's down undoes its up, also across branches and merges", function()
        files()
        local code, out, err = cli(("verify -d %q --dir %q"):format(url, dir))
        assert.equal(0, code, out .. err)
        assert.equal("verified 2 revision(s): each down undoes its up\n", out)
        local ok, res = migrate.verify { url = url, dir = H.root .. "/spec/fixtures/migrate/branches" }
        assert.is_true(ok)
        assert.equal(5, res.checked)
        assert.equal(0, scratch_dbs())
    end)

    it("verify takes a two-phase migration through finish, and needs its unfinish", function()
        local phased = [[
return { revision = "p2", down_revision = "4f1c2a9e7b30", message = "given_name",
    up = function(op) op.add_column("users", { name = "given_name", type = "string(100)" }) end,
    finish = function(op) op.drop_column("users", "first_name") end,
    %s
    down = function(op) op.drop_column("users", "given_name") end }
]]
        files()
        H.sh("rm -f " .. H.shell_quote(dir .. "/n2_nickname.lua"))
        H.write_file(dir .. "/p2.lua", phased:format(
            'unfinish = function(op) op.add_column("users", { name = "first_name", type = "string(100)" }) end,'))
        local ok, res = migrate.verify { url = url, dir = dir }
        assert.is_true(ok, res and (res.error and tostring(res.error) or res.differences and res.differences[1].text))
        assert.equal(2, res.checked)
        -- an unfinish that brings the column back with another type does not undo finish
        H.write_file(dir .. "/p2.lua", phased:format(
            'unfinish = function(op) op.add_column("users", { name = "first_name", type = "text" }) end,'))
        ok, res = migrate.verify { url = url, dir = dir }
        assert.is_false(ok)
        assert.equal("p2", res.revision)
        assert.equal("downgrade", res.step)
        assert.equal("column public.users.first_name differs: expected character varying(100) NULL, found text NULL",
            res.differences[1].text)
        -- without unfinish the downgrade is refused
        H.write_file(dir .. "/p2.lua", phased:format(""))
        ok, res = migrate.verify { url = url, dir = dir }
        assert.is_false(ok)
        assert.equal("downgrade", res.step)
        assert.equal("finished_migration", res.error.code)
        assert.equal(0, scratch_dbs())
    end)

    it("verify names the first revision whose down does not undo its up", function()
        files('op.drop_column("users", "nickname")') -- forgets the badge table
        local code, out, err = cli(("verify -d %q --dir %q"):format(url, dir))
        assert.equal(1, code, out)
        assert.equal("kronos: " .. dir .. "/n2_nickname.lua: revision 'n2': after downgrade the schema differs "
            .. "(7 difference(s))\n", err)
        assert.matches("relation public.badge is not expected (found table)", out, 1, true)
        assert.matches("relation public.badge_id_seq is not expected (found sequence)", out, 1, true)
        local ok, res = migrate.verify { url = url, dir = dir }
        assert.is_false(ok)
        assert.equal("n2", res.revision)
        assert.equal("downgrade", res.step)

        files('op.drop_table("badge") op.execute("SELECT 1/0")')
        ok, res = migrate.verify { url = url, dir = dir }
        assert.is_false(ok)
        assert.equal("n2", res.revision)
        assert.equal("downgrade", res.step)
        assert.equal("division_by_zero", res.error.code)

        assert.equal(0, scratch_dbs())
    end)
end)
