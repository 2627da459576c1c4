-- The user model (src/users.c, src/validate.c, lua/kronos/users.lua) against a real server.
local kronos = require "kronos"
local H = require "spec.helper"

-- The users table comes from the project's own users migration (migrations/).
local function create_users_table(conn)
    local applied = require("kronos.migrate").upgrade { db = conn, dir = H.root .. "/migrations" }
    assert(#applied >= 1, "no migration applied")
    assert(conn:exec("SELECT 'users'::regclass"))
end

-- Runs a Lua script in another process (the same interpreter and module paths) without waiting.
local function spawn(script, ...)
    local path = os.tmpname()
    local f = assert(io.open(path, "w"))
    f:write(script)
    f:close()
    local args = {}
    for i, a in ipairs { ... } do args[i] = ("'%s'"):format(a) end
    local proc = assert(io.popen(("%s %s %s 2>&1; rm -f %s"):format(H.lua, path, table.concat(args, " "), path)))
    return proc
end

describe("kronos.users", function()
    local url, dbname, db, users

    setup(function()
        url, dbname = H.fresh_db("users")
        db = assert(kronos.connect(url))
        create_users_table(db)
        users = kronos.users(db)
    end)

    teardown(function()
        db:close()
        H.drop_db(dbname)
    end)

    before_each(function()
        assert(db:exec("DELETE FROM users"))
    end)

    local function count_rows()
        return db:exec("SELECT count(*) AS n FROM users")[1].n
    end

    local function before(a, b) -- a < b as timestamps, compared by the server
        return db:exec("SELECT $1::timestamptz < $2::timestamptz AS lt", a, b)[1].lt
    end

    describe("create", function()
        it("stores a user with a v4 UUID, the trimmed lower-cased email and the defaults", function()
            local u = assert(users:create { email = "  Ada.Lovelace@Example.COM\t", first_name = "Ada", last_name = "Lovelace" })
            assert.is_true(kronos.is_uuid(u.id))
            assert.are.equal("4", u.id:sub(15, 15))
            assert.are.equal("ada.lovelace@example.com", u.email)
            assert.are.equal("Ada", u.first_name)
            assert.are.equal("Lovelace", u.last_name)
            assert.is_true(u.is_active)
            assert.is_nil(u.profile_image_url)
            assert.is_nil(u.last_login)
            assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d[.%d]*Z$", u.created_at)
            assert.are.equal(u.created_at, u.updated_at)
            local row = db:exec("SELECT id::text, email, is_active FROM users")[1]
            assert.are.same({ id = u.id, email = "ada.lovelace@example.com", is_active = true }, row)
        end)

        it("takes is_active and an http(s) profile image URL", function()
            local u = assert(users:create { email = "b@example.org", is_active = false,
                                            profile_image_url = "https://cdn.example.org:8443/a/b.png?s=1#x" })
            assert.is_false(u.is_active)
            assert.are.equal("https://cdn.example.org:8443/a/b.png?s=1#x", u.profile_image_url)
            assert.are.equal(1, users:count { active = false })
        end)

        it("reads back identical through get, find_by_email and list", function()
            local u = assert(users:create { email = "Same@Example.org", first_name = "Zoë", last_name = "O'Brien\t\"q\"",
                                            profile_image_url = "http://example.org/p.jpg" })
            local got = assert(users:get(u.id))
            local found = assert(users:find_by_email("SAME@example.ORG "))
            local page = assert(users:list())
            assert.are.equal(1, #page)
            assert.are.same(u, got)
            assert.are.same(u, found)
            assert.are.same(u, page[1])
            for _, v in ipairs { got, found, page[1] } do
                assert.are.equal(getmetatable(u), getmetatable(v))
            end
        end)

        it("is a plain table that prints readably", function()
            local u = assert(users:create { email = "print@example.org", first_name = "Line\nbreak" })
            local keys = {}
            for k in pairs(u) do keys[#keys + 1] = k end
            table.sort(keys)
            assert.are.same({ "created_at", "email", "first_name", "id", "is_active", "updated_at" }, keys)
            u.note = "mine" -- a plain table: callers may add to it
            assert.are.equal("mine", rawget(u, "note"))
            local s = tostring(u)
            assert.are.equal(1, select(2, s:gsub("\n", "\n")) + 1) -- one line
            assert.matches('email = "print@example.org"', s, 1, true)
            assert.matches('first_name = "Line\\nbreak"', s, 1, true)
            assert.matches('id = "' .. u.id .. '"', s, 1, true)
            assert.matches("is_active = true", s, 1, true)
        end)

        it("accepts 100 characters of é in a name and refuses 101 (too_long)", function()
            local e100 = ("é"):rep(100)
            local u = assert(users:create { email = "e@example.org", first_name = e100, last_name = e100 })
            assert.are.equal(e100, u.first_name)
            assert.are.equal(100, db:exec("SELECT char_length(first_name) AS n FROM users")[1].n)
            local nu, err = users:create { email = "f@example.org", last_name = ("é"):rep(101) }
            assert.is_nil(nu)
            assert.are.equal("too_long", err.code)
            assert.are.equal("last_name", err.field)
            assert.are.equal(1, count_rows())
        end)

        it("counts the email and URL lengths in characters too", function()
            local local_part = ("ü"):rep(246) -- 251 characters with the domain
            assert.is_truthy(users:create { email = local_part .. "@x.de" })
            local long = local_part .. "üüüü" .. "@x.de" -- 255 characters
            assert.is_truthy(users:create { email = long })
            local _, err = users:create { email = "ü" .. long }
            assert.are.equal("too_long", err.code)
            assert.are.equal("email", err.field)
            local long_url = "https://x.org/" .. ("é"):rep(2048 - 14)
            assert.is_truthy(users:create { email = "url@x.org", profile_image_url = long_url })
            _, err = users:create { email = "url2@x.org", profile_image_url = long_url .. "é" }
            assert.are.equal("too_long", err.code)
            assert.are.equal("profile_image_url", err.field)
        end)
    end)

    describe("validation", function()
        local function refused(fields, code, field)
            local before_count = count_rows()
            local u, err = users:create(fields)
            assert.is_nil(u)
            assert.is_true(kronos.is_error(err))
            assert.are.equal(code, err.code)
            assert.are.equal(field, err.field)
            assert.is_string(err.message)
            assert.is_nil(tostring(err):find("\n"))
            assert.are.equal(before_count, count_rows())
            return err
        end

        it("refuses malformed emails with invalid_email", function()
            for _, email in ipairs { "a@b", "no-at-sign.org", "two@@x.org", "a@b@c.org", "@example.org",
                                     "user@", "sp ace@x.org", "tab\t@x.org", "nb\194\160sp@x.org",
                                     "ctl\1@x.org", "     " } do
                refused({ email = email }, "invalid_email", "email")
            end
            refused({ first_name = "no email" }, "invalid_email", "email")
        end)

        it("refuses text that is not UTF-8 with invalid_utf8", function()
            refused({ email = "bad\255@x.org" }, "invalid_utf8", "email")
            refused({ email = "ok@x.org", first_name = "\192\175" }, "invalid_utf8", "first_name") -- overlong '/'
            refused({ email = "ok@x.org", last_name = "\237\160\128" }, "invalid_utf8", "last_name") -- a surrogate
            refused({ email = "ok@x.org", last_name = "nul\0byte" }, "invalid_utf8", "last_name")
            refused({ email = "ok@x.org", profile_image_url = "http://x.org/\244\144\128\128" }, "invalid_utf8",
                    "profile_image_url")
        end)

        it("refuses non-http(s) URLs with invalid_url", function()
            for _, bad in ipairs { "ftp://x.org/a", "x.org/a.png", "http://", "https:///path", "http://x.org:port/",
                                   "http://x.org/a b", "javascript:alert(1)", "http://[]/" } do
                refused({ email = "ok@x.org", profile_image_url = bad }, "invalid_url", "profile_image_url")
            end
        end)

        it("refuses unknown and database-owned fields with invalid_field", function()
            refused({ email = "ok@x.org", nickname = "x" }, "invalid_field", "nickname")
            for _, f in ipairs { "id", "created_at", "updated_at", "last_login" } do
                refused({ email = "ok@x.org", [f] = "2020-01-01" }, "invalid_field", f)
            end
            refused({ email = "ok@x.org", [1] = "x" }, "invalid_field", nil)
        end)

        it("refuses values of the wrong type with invalid_type", function()
            refused({ email = 12345 }, "invalid_type", "email")
            refused({ email = kronos.null }, "invalid_type", "email")
            refused({ email = "ok@x.org", first_name = 42 }, "invalid_type", "first_name")
            refused({ email = "ok@x.org", is_active = "yes" }, "invalid_type", "is_active")
            refused({ email = "ok@x.org", is_active = kronos.null }, "invalid_type", "is_active")
            refused({ email = "ok@x.org", profile_image_url = {} }, "invalid_type", "profile_image_url")
        end)

        it("refuses an email that is taken with duplicate_email", function()
            assert(users:create { email = "taken@x.org" })
            local err = refused({ email = " TAKEN@x.org" }, "duplicate_email", "email")
            assert.are.equal("23505", err.sqlstate)
            assert.are.equal("uq_users_email", err.constraint)
        end)

        it("maps the email check constraint of the server to invalid_email", function()
            -- a stricter copy of the constraint lets a valid email reach it; rolled back after
            assert(db:exec("BEGIN"))
            assert(db:script([[ALTER TABLE users DROP CONSTRAINT ck_users_email_length;
                ALTER TABLE users ADD CONSTRAINT ck_users_email_length CHECK (char_length(email) >= 8)]]))
            local u, err = users:create { email = "a@b.cd" }
            assert(db:exec("ROLLBACK"))
            assert.is_nil(u)
            assert.are.equal("invalid_email", err.code)
            assert.are.equal("email", err.field)
            assert.are.equal("23514", err.sqlstate)
        end)

        it("passes the connection's codes through", function()
            local other_url, other_name = H.fresh_db("users_notable")
            local c = assert(kronos.connect(other_url))
            local u, err = kronos.users(c):get(kronos.uuid())
            assert.is_nil(u)
            assert.are.equal("undefined_table", err.code)
            local killer = assert(kronos.connect(other_url))
            assert(killer:exec("SELECT pg_terminate_backend($1)", c:backend_pid()))
            killer:close()
            u, err = kronos.users(c):count()
            assert.is_nil(u)
            assert.are.equal("connection", err.code)
            c:close()
            H.drop_db(other_name)
        end)

        it("raises on misuse, naming the argument", function()
            local id = kronos.uuid()
            local cases = {
                { function() return users:create("x@y.org") end, "fields must be a table" },
                { function() return users:create() end, "fields must be a table" },
                { function() return users.create({}, { email = "x@y.org" }) end, "users object expected" },
                { function() return users:get(42) end, "id must be a string" },
                { function() return users:get() end, "id must be a string" },
                { function() return users:update(nil, {}) end, "id must be a string" },
                { function() return users:update(id, "x") end, "fields must be a table" },
                { function() return users:delete(false) end, "id must be a string" },
                { function() return users:deactivate({}) end, "id must be a string" },
                { function() return users:activate(1) end, "id must be a string" },
                { function() return users:record_login(nil) end, "id must be a string" },
                { function() return users:find_by_email(7) end, "email must be a string" },
                { function() return users:create_many("x") end, "list must be a table" },
                { function() return users:list("x") end, "options: table expected, got string" },
                { function() return users:count(5) end, "options: table expected, got number" },
                { function() return kronos.users("db") end, "kronos connection expected" },
            }
            for _, case in ipairs(cases) do
                local ok, err = pcall(case[1])
                assert.is_false(ok)
                assert.is_true(kronos.is_error(err))
                assert.are.equal("bad_argument", err.code)
                assert.matches("^bad argument #%d to '[%w_?]+' %(", tostring(err)) -- '?': LuaJIT's tail calls
                assert.matches(case[2], tostring(err), 1, true)
                assert.is_nil(tostring(err):find("\n"))
            end
            -- the error names the method the caller used
            local _, err = pcall(function() local u = users:get(42); return u end)
            assert.are.equal("bad argument #1 to 'get' (id must be a string, got number) [bad_argument]", tostring(err))
        end)
    end)

    describe("get and find_by_email", function()
        it("return nil when there is no such user", function()
            assert.is_nil(users:get(kronos.uuid()))
            assert.is_nil(users:find_by_email("nobody@x.org"))
            assert.are.equal(1, select("#", users:get(kronos.uuid())))
        end)

        it("refuse a malformed id with invalid_uuid, without a query", function()
            for _, id in ipairs { "", "not-a-uuid", "12345678-1234-1234-1234-1234567890", kronos.uuid() .. "0",
                                  "g2345678-1234-1234-1234-123456789012" } do
                local u, err = users:get(id)
                assert.is_nil(u)
                assert.are.equal("invalid_uuid", err.code)
                assert.are.equal("id", err.field)
            end
            -- no query: still works inside an aborted transaction, where any query would fail
            assert(db:exec("BEGIN"))
            assert.is_nil(db:exec("SELECT 1/0"))
            local _, err = users:get("nope")
            assert(db:exec("ROLLBACK"))
            assert.are.equal("invalid_uuid", err.code)
        end)

        it("accept an upper-case UUID", function()
            local u = assert(users:create { email = "up@x.org" })
            assert.are.same(u, users:get(u.id:upper()))
        end)

        it("find_by_email validates the email it looks up", function()
            local u, err = users:find_by_email("nope")
            assert.is_nil(u)
            assert.are.equal("invalid_email", err.code)
        end)
    end)

    describe("update", function()
        it("changes the given fields, clears with kronos.null, moves updated_at forward, keeps created_at", function()
            local u = assert(users:create { email = "up@x.org", first_name = "A", last_name = "B" })
            local v = assert(users:update(u.id, { first_name = "Ä", last_name = kronos.null, email = " New@X.org " }))
            assert.are.equal(u.id, v.id)
            assert.are.equal("Ä", v.first_name)
            assert.is_nil(v.last_name)
            assert.are.equal("new@x.org", v.email)
            assert.are.equal(u.created_at, v.created_at)
            assert.is_true(before(u.updated_at, v.updated_at))
            assert.are.same(v, users:get(u.id))
        end)

        it("moves updated_at strictly forward even inside one transaction", function()
            local stamps, created = {}, nil
            db:transaction(function()
                local u = assert(users:create { email = "tx@x.org" })
                created = u.created_at
                stamps[1] = u.updated_at
                for i = 2, 5 do
                    local v = assert(users:update(u.id, { first_name = "n" .. i }))
                    assert.are.equal(created, v.created_at)
                    stamps[i] = v.updated_at
                end
                stamps[6] = assert(users:deactivate(u.id)).updated_at
                stamps[7] = assert(users:record_login(u.id)).updated_at
            end)
            for i = 2, #stamps do assert.is_true(before(stamps[i - 1], stamps[i])) end
            assert.are.equal(created, users:find_by_email("tx@x.org").created_at)
        end)

        it("refuses what create refuses, and the fields the database owns", function()
            local u = assert(users:create { email = "v@x.org" })
            assert(users:create { email = "w@x.org" })
            local cases = {
                { { email = "w@x.org" }, "duplicate_email", "email" },
                { { email = "bad" }, "invalid_email", "email" },
                { { first_name = ("x"):rep(101) }, "too_long", "first_name" },
                { { profile_image_url = "file:///etc/passwd" }, "invalid_url", "profile_image_url" },
                { { is_active = 1 }, "invalid_type", "is_active" },
                { { created_at = "2000-01-01T00:00:00Z" }, "invalid_field", "created_at" },
                { { updated_at = "2000-01-01T00:00:00Z" }, "invalid_field", "updated_at" },
                { { id = kronos.uuid() }, "invalid_field", "id" },
            }
            for _, case in ipairs(cases) do
                local v, err = users:update(u.id, case[1])
                assert.is_nil(v)
                assert.are.equal(case[2], err.code)
                assert.are.equal(case[3], err.field)
            end
            assert.are.same(u, users:get(u.id))
        end)

        it("returns not_found for an unknown id and invalid_uuid for a malformed one", function()
            local v, err = users:update(kronos.uuid(), { first_name = "x" })
            assert.is_nil(v)
            assert.are.equal("not_found", err.code)
            v, err = users:update("x", { first_name = "x" })
            assert.is_nil(v)
            assert.are.equal("invalid_uuid", err.code)
        end)
    end)

    describe("activate, deactivate, record_login, delete", function()
        it("change the state and return the updated user", function()
            local u = assert(users:create { email = "s@x.org" })
            local d = assert(users:deactivate(u.id))
            assert.is_false(d.is_active)
            assert.are.equal(0, users:count { active = true })
            local a = assert(users:activate(u.id))
            assert.is_true(a.is_active)
            assert.is_nil(a.last_login)
            local l = assert(users:record_login(u.id))
            assert.is_string(l.last_login)
            assert.is_false(before(l.last_login, u.created_at))
            assert.are.same(l, users:get(u.id))
            assert.are.equal(u.created_at, l.created_at)
        end)

        it("delete removes the user, then says not_found", function()
            local u = assert(users:create { email = "del@x.org" })
            assert.is_true(users:delete(u.id))
            assert.is_nil(users:get(u.id))
            local ok, err = users:delete(u.id)
            assert.is_nil(ok)
            assert.are.equal("not_found", err.code)
            assert.are.equal("id", err.field)
        end)

        it("return not_found or invalid_uuid", function()
            for _, m in ipairs { "activate", "deactivate", "record_login", "delete" } do
                local r, err = users[m](users, kronos.uuid())
                assert.is_nil(r)
                assert.are.equal("not_found", err.code)
                r, err = users[m](users, "zz")
                assert.is_nil(r)
                assert.are.equal("invalid_uuid", err.code)
            end
        end)
    end)

    describe("list and count", function()
        it("pages in (created_at, id) order with a cursor, filtering on active", function()
            local batch = {}
            for i = 1, 25 do batch[i] = { email = ("p%02d@x.org"):format(i), is_active = i % 5 ~= 0 } end
            assert.are.equal(25, users:create_many(batch))
            local late = assert(users:create { email = "late@x.org" })
            assert.are.equal(26, users:count())
            assert.are.equal(21, users:count { active = true })
            assert.are.equal(5, users:count { active = false })
            local expected = db:exec("SELECT id::text FROM users ORDER BY created_at, id")
            local got, cursor, pages = {}, nil, 0
            repeat
                local page
                page, cursor = users:list { limit = 10, after = cursor }
                assert.is_table(page)
                pages = pages + 1
                for _, u in ipairs(page) do got[#got + 1] = u.id end
            until cursor == nil
            assert.are.equal(3, pages)
            assert.are.equal(26, #got)
            for i, row in ipairs(expected) do assert.are.equal(row.id, got[i]) end
            assert.are.equal(late.id, got[26])
            local inactive = users:list { active = false, limit = 1000 }
            assert.are.equal(5, #inactive)
            for _, u in ipairs(inactive) do assert.is_false(u.is_active) end
            local exact, next_cursor = users:list { active = false, limit = 5 }
            assert.are.equal(5, #exact)
            assert.is_nil(next_cursor) -- the last page says so, even when it is full
            local default = users:list()
            assert.are.equal(26, #default) -- the default limit is 50
        end)

        it("returns an empty page and no cursor on an empty table", function()
            local page, cursor = users:list { limit = 5 }
            assert.are.same({}, page)
            assert.is_nil(cursor)
            assert.are.equal(0, users:count())
        end)

        it("starts the first page at the smallest created_at of the users that match", function()
            -- a batch that fills more than a page at the smallest created_at, inactive users
            -- only later: the first page of each filter starts at its own smallest created_at
            local batch = {}
            for i = 1, 1500 do batch[i] = { email = ("first%04d@x.org"):format(i) } end
            assert.are.equal(1500, users:create_many(batch))
            local shared = db:exec("SELECT min(created_at)::text AS t FROM users")[1].t
            for i = 1, 4 do
                assert(db:exec([[INSERT INTO users (id, email, is_active, created_at)
                    VALUES ($1, $2, false, $3::timestamptz + $4 * interval '1 second')]],
                    kronos.uuid(), ("later%d@x.org"):format(i), shared, 5 - i))
            end
            local function all_of(opts, filter)
                local expected = db:exec("SELECT id::text FROM users" .. filter .. " ORDER BY created_at, id")
                local got, cursor, pages = {}, nil, 0
                repeat
                    opts.after = cursor
                    local page
                    page, cursor = assert(users:list(opts))
                    pages = pages + 1
                    if cursor then assert.are.equal(opts.limit, #page) end
                    for _, u in ipairs(page) do got[#got + 1] = u.id end
                until cursor == nil
                assert.are.equal(#expected, #got)
                for i, row in ipairs(expected) do assert.are.equal(row.id, got[i]) end
                return pages
            end
            assert.are.equal(2, all_of({ limit = 1000 }, ""))
            assert.are.equal(1, all_of({ limit = 1000, active = false }, " WHERE NOT is_active"))
            assert.are.equal(2, all_of({ limit = 3, active = false }, " WHERE NOT is_active"))
            assert.are.equal(2, all_of({ limit = 1000, active = true }, " WHERE is_active"))
            -- no user matches: one empty page, no cursor
            assert(db:exec("UPDATE users SET is_active = true"))
            local page, cursor = users:list { active = false }
            assert.are.same({}, page)
            assert.is_nil(cursor)
        end)

        it("gives the same pages for a cursor however it is asked for again", function()
            -- a page whose rows share one created_at makes the next one ask that created_at
            -- alone first (and the later ones for the rest when it runs out: page 3 here); a
            -- cursor asked again, out of order or through another users object, must give the
            -- same page
            local batch = {}
            for i = 1, 25 do batch[i] = { email = ("again%02d@x.org"):format(i) } end
            assert.are.equal(25, users:create_many(batch))
            local shared = db:exec("SELECT min(created_at)::text AS t FROM users")[1].t
            for i = 1, 15 do
                assert(db:exec([[INSERT INTO users (id, email, created_at)
                    VALUES ($1, $2, $3::timestamptz + $4 * interval '1 ms')]],
                    kronos.uuid(), ("after%02d@x.org"):format(i), shared, 16 - i))
            end
            local expected = db:exec("SELECT id::text FROM users ORDER BY created_at, id")
            local function ids(page)
                local t = {}
                for i, u in ipairs(page) do t[i] = u.id end
                return t
            end
            local cursors, pages, got = { false }, {}, {}
            repeat
                local page, cursor = assert(users:list { limit = 10, after = cursors[#cursors] or nil })
                pages[#pages + 1] = ids(page)
                for _, id in ipairs(pages[#pages]) do got[#got + 1] = id end
                cursors[#cursors + 1] = cursor or false
            until not cursor
            assert.are.equal(4, #pages)
            assert.are.equal(40, #got)
            for i, row in ipairs(expected) do assert.are.equal(row.id, got[i]) end
            local again = kronos.users(db)
            for i = #pages, 1, -1 do
                for _, u in ipairs { users, again } do
                    local page, cursor = assert(u:list { limit = 10, after = cursors[i] or nil })
                    assert.are.same(pages[i], ids(page))
                    assert.are.equal(cursors[i + 1] or nil, cursor)
                end
            end
        end)

        it("returns a page as an array of user objects and nothing else", function()
            local batch = {}
            for i = 1, 12 do batch[i] = { email = ("shape%02d@x.org"):format(i) } end
            assert.are.equal(12, users:create_many(batch))
            local page, cursor = assert(users:list { limit = 5 })
            assert.is_string(cursor)
            local keys = 0
            for _ in pairs(page) do keys = keys + 1 end
            assert.are.equal(5, keys) -- no extra row, no fields beside the users
            local one = assert(users:get(page[1].id))
            for _, u in ipairs(page) do assert.are.equal(getmetatable(one), getmetatable(u)) end
            assert.are.same(one, page[1])
            page, cursor = assert(users:list { limit = 7, after = cursor })
            assert.are.equal(7, #page)
            assert.is_nil(cursor) -- exactly the rest: the last page, and it says so
        end)

        it("raises on bad options (misuse), returns invalid_field for forged cursors (data)", function()
            local misuse = {
                { { limit = 0 }, "options.limit: must be from 1 to 1000, got 0" },
                { { limit = 1001 }, "options.limit: must be from 1 to 1000, got 1001" },
                { { limit = 2.5 }, "options.limit: integer expected, got a fraction" },
                { { limit = "10" }, "options.limit: integer expected, got string" },
                { { active = "yes" }, "options.active: boolean expected, got string" },
                { { after = 5 }, "options.after: string expected, got number" },
                { { offset = 10 }, 'options: unknown key "offset" (expected active, limit, after)' },
                { { limt = 10 }, 'options: unknown key "limt" (did you mean "limit"?)' },
            }
            for _, case in ipairs(misuse) do
                local ok, err = pcall(users.list, users, case[1])
                assert.is_false(ok)
                assert.are.equal("bad_argument", err.code)
                assert.are.equal("bad argument #2 to '?' (" .. case[2] .. ")", err.message)
                ok, err = pcall(function() local page = users:list(case[1]); return page end)
                assert.is_false(ok)
                assert.are.equal("bad argument #1 to 'list' (" .. case[2] .. ") [bad_argument]", tostring(err))
            end
            for _, after in ipairs { "not a cursor", "" } do
                local page, err = users:list { after = after }
                assert.is_nil(page)
                assert.are.equal("invalid_field", err.code)
                assert.are.equal("after", err.field)
            end
            local ok, err = pcall(function() local n = users:count { limit = 5 }; return n end)
            assert.is_false(ok)
            assert.are.equal("bad argument #1 to 'count' (options: unknown key \"limit\" (expected active)) [bad_argument]",
                tostring(err))
            local page
            -- a cursor of the right shape whose date the server refuses
            local function b64(s)
                local chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
                local bits = s:gsub(".", function(c)
                    local byte, r = c:byte(), ""
                    for i = 8, 1, -1 do r = r .. (byte % 2 ^ i - byte % 2 ^ (i - 1) > 0 and "1" or "0") end
                    return r
                end)
                bits = bits .. ("0"):rep((6 - #bits % 6) % 6)
                return (bits:gsub("%d%d%d%d%d%d", function(six)
                    local v = 0
                    for i = 1, 6 do v = v * 2 + (six:sub(i, i) == "1" and 1 or 0) end
                    return chars:sub(v + 1, v + 1)
                end))
            end
            page, err = users:list { after = b64("1|2024-13-45 99:99:99+00|" .. kronos.uuid()) }
            assert.is_nil(page)
            assert.are.equal("invalid_field", err.code)
            assert.are.equal("after", err.field)
            -- and a well-formed one built the same way is accepted
            page = assert(users:list { after = b64("1|2024-01-01 00:00:00+00|" .. kronos.uuid()) })
            assert.are.same({}, page)
        end)

        it("pages through 10,001 users while another connection inserts, each exactly once", function()
            local batch = {}
            for i = 1, 10001 do batch[i] = { email = ("bulk%05d@x.org"):format(i) } end
            assert.are.equal(10001, users:create_many(batch))
            local existing = {}
            for _, row in ipairs(db:exec("SELECT id::text FROM users")) do existing[row.id] = true end
            local other = assert(kronos.connect(url))
            local other_users = kronos.users(other)
            local seen, cursor, pages, inserted = {}, nil, 0, 0
            repeat
                local page
                page, cursor = assert(users:list { limit = 1000, after = cursor })
                pages = pages + 1
                for _, u in ipairs(page) do
                    assert.is_nil(seen[u.id], "a user came twice")
                    seen[u.id] = true
                end
                -- rows before the cursor (an old created_at) would shift OFFSET pages; new ones land after it
                assert(other:exec([[INSERT INTO users (id, email, created_at)
                    VALUES (gen_random_uuid(), $1, now() - interval '1 day')]], ("old%d@x.org"):format(pages)))
                assert(other_users:create { email = ("new%d@x.org"):format(pages) })
                inserted = inserted + 2
            until cursor == nil
            other:close()
            local missing = 0
            for id in pairs(existing) do
                if not seen[id] then missing = missing + 1 end
            end
            assert.are.equal(0, missing)
            assert.is_true(pages >= 11)
            assert.are.equal(10001 + inserted, users:count())
        end)

        it("pages over rows sharing one created_at in order, each once, while rows come and go", function()
            -- one create_many gives its whole batch one created_at (one transaction, one now());
            -- rows at distinct times before and after it, and statistics that know the batch
            local batch = {}
            for i = 1, 3000 do batch[i] = { email = ("same%04d@x.org"):format(i), is_active = i % 7 ~= 0 } end
            assert.are.equal(3000, users:create_many(batch))
            local shared = db:exec("SELECT created_at::text AS t FROM users LIMIT 1")[1].t
            for i = 1, 10 do
                assert(db:exec([[INSERT INTO users (id, email, created_at)
                    VALUES ($1, $2, $3::timestamptz + $4 * interval '1 second')]],
                    kronos.uuid(), ("around%02d@x.org"):format(i), shared, i <= 5 and -i or i))
            end
            assert(db:exec("ANALYZE users"))
            assert.are.equal(3000, db:exec("SELECT count(*) AS n FROM users WHERE created_at = $1", shared)[1].n)
            local other = assert(kronos.connect(url))
            -- (created_at, id) of a against b, compared by the server: -1, 0 or 1
            local function cmp(a_ts, a_id, b_ts, b_id)
                return other:exec([[SELECT CASE WHEN ($1::timestamptz, $2::uuid) < ($3::timestamptz, $4::uuid) THEN -1
                    WHEN ($1::timestamptz, $2::uuid) = ($3::timestamptz, $4::uuid) THEN 0 ELSE 1 END AS c]],
                    a_ts, a_id, b_ts, b_id)[1].c
            end
            for _, active in ipairs { "all", false } do
                local filter = active == "all" and "" or " WHERE NOT is_active"
                local expect = {}
                for _, row in ipairs(db:exec("SELECT id::text FROM users" .. filter)) do expect[row.id] = true end
                local seen, order, cursor, pages, last = {}, {}, nil, 0, nil
                repeat
                    local page
                    local opts = { limit = active == "all" and 97 or 29, after = cursor }
                    if active ~= "all" then opts.active = active end
                    page, cursor = assert(users:list(opts))
                    pages = pages + 1
                    for _, u in ipairs(page) do
                        assert.is_nil(seen[u.id], "a user came twice")
                        if last then assert.are.equal(-1, cmp(last.created_at, last.id, u.created_at, u.id)) end
                        assert.is_true(expect[u.id] == true, "a user that should not be listed was")
                        seen[u.id], last = true, u
                        order[#order + 1] = u.id
                    end
                    if cursor then
                        -- a row not listed yet goes away: it must not come
                        local gone = other:exec([[SELECT id::text FROM users
                            WHERE (created_at, id) > ($1::timestamptz, $2::uuid)]]
                            .. (active == "all" and "" or " AND NOT is_active") .. " ORDER BY random() LIMIT 1",
                            last.created_at, last.id)[1]
                        if gone then
                            assert(other:exec("DELETE FROM users WHERE id = $1", gone.id))
                            expect[gone.id] = nil
                        end
                        -- a listed one goes away: no page shifts
                        assert(other:exec("DELETE FROM users WHERE id = $1", order[1 + (pages * 31) % #order]))
                        -- new rows with the shared created_at: listed exactly when after the cursor
                        for _ = 1, 2 do
                            local id = kronos.uuid()
                            assert(other:exec([[INSERT INTO users (id, email, created_at, is_active)
                                VALUES ($1, $2, $3, false)]], id, id .. "@x.org", shared))
                            if cmp(shared, id, last.created_at, last.id) > 0 then expect[id] = true end
                        end
                    end
                until cursor == nil
                assert.is_true(pages > 10)
                for id in pairs(expect) do assert.is_true(seen[id], "a user was skipped") end
                -- the listed order is the server's (created_at, id) order of what is left
                local left, exists = {}, {}
                for _, row in ipairs(db:exec("SELECT id::text FROM users ORDER BY created_at, id")) do
                    if seen[row.id] then left[#left + 1] = row.id end
                    exists[row.id] = true
                end
                local listed = {}
                for _, id in ipairs(order) do
                    if exists[id] then listed[#listed + 1] = id end
                end
                assert.are.same(left, listed)
            end
            other:close()
        end)
    end)

    describe("create_many", function()
        it("writes every entry in one go, escaping what COPY would misread", function()
            local batch = {
                { email = "M1@X.org", first_name = "tab\there", last_name = "back\\slash\\N" },
                { email = "m2@x.org", first_name = "new\nline\r", last_name = kronos.null, is_active = false },
                { email = "m3@x.org", profile_image_url = "https://x.org/\\.png" },
            }
            assert.are.equal(3, users:create_many(batch))
            local a = users:find_by_email("m1@x.org")
            assert.are.equal("tab\there", a.first_name)
            assert.are.equal("back\\slash\\N", a.last_name)
            assert.is_true(a.is_active)
            assert.is_true(kronos.is_uuid(a.id))
            local b = users:find_by_email("m2@x.org")
            assert.are.equal("new\nline\r", b.first_name)
            assert.is_nil(b.last_name)
            assert.is_false(b.is_active)
            assert.are.equal("https://x.org/\\.png", users:find_by_email("m3@x.org").profile_image_url)
            assert.are.equal(0, users:create_many({}))
        end)

        it("writes nothing when one entry is invalid, and names it", function()
            local batch = {}
            for i = 1, 100 do batch[i] = { email = ("v%d@x.org"):format(i) } end
            batch[57] = { email = "v57@x.org", first_name = ("x"):rep(101) }
            batch[80] = { email = "broken" }
            local n, err = users:create_many(batch)
            assert.is_nil(n)
            assert.are.equal("too_long", err.code)
            assert.are.equal(57, err.index)
            assert.are.equal("first_name", err.field)
            assert.matches("entry 57", err.message, 1, true)
            assert.are.equal(0, count_rows())
            batch[57] = { email = "v57@x.org" }
            n, err = users:create_many(batch)
            assert.is_nil(n)
            assert.are.equal("invalid_email", err.code)
            assert.are.equal(80, err.index)
            batch[80] = "not a table"
            n, err = users:create_many(batch)
            assert.are.equal("invalid_type", err.code)
            assert.are.equal(80, err.index)
            assert.is_nil(n)
            assert.are.equal(0, count_rows())
        end)

        it("writes what its one pass over each entry checked: escapes, non-ASCII text, a padded email", function()
            local pad = (" "):rep(3000) -- past the one-walk reader's email buffer: the fixed-order checker takes it
            local batch = {
                { email = "Back\\Slash@X.org", first_name = "Zoë Ünïcode 12345678", last_name = "eight by\tx" },
                { email = pad .. "Padded.Long.Address@Example.ORG\t" .. pad, profile_image_url = kronos.null, is_active = true },
                { email = "émile.ß@exämple.org", first_name = kronos.null, last_name = "\\N",
                  profile_image_url = "https://exämple.org/ß?q=\\" },
            }
            assert.are.equal(3, users:create_many(batch))
            local a = users:find_by_email("back\\slash@x.org")
            assert.are.same({ "back\\slash@x.org", "Zoë Ünïcode 12345678", "eight by\tx" },
                { a.email, a.first_name, a.last_name })
            local b = users:find_by_email("padded.long.address@example.org")
            assert.are.same({ "padded.long.address@example.org", true }, { b.email, b.is_active })
            assert.is_nil(b.profile_image_url)
            local c = users:find_by_email("émile.ß@exämple.org")
            assert.are.same({ "\\N", "https://exämple.org/ß?q=\\" }, { c.last_name, c.profile_image_url })
            assert.is_nil(c.first_name)
        end)

        it("names an entry's first problem in the fixed order, whatever order its keys come in", function()
            local n, err = users:create_many { { email = "ok@x.org" }, { email = "bad", nickname = "x" } }
            assert.is_nil(n)
            assert.are.same({ "invalid_field", "nickname", 2 }, { err.code, err.field, err.index })
            n, err = users:create_many { { is_active = "yes", last_name = 5, first_name = ("x"):rep(101), email = "ok@x.org" } }
            assert.is_nil(n)
            assert.are.same({ "too_long", "first_name", 1 }, { err.code, err.field, err.index })
            n, err = users:create_many { { email = "ok@x.org", first_name = "a\0b" }, { first_name = "x" } }
            assert.is_nil(n)
            assert.are.same({ "invalid_utf8", "first_name", 1 }, { err.code, err.field, err.index })
            n, err = users:create_many { { email = "ok@x.org" }, { first_name = "x" } }
            assert.is_nil(n)
            assert.are.same({ "invalid_email", "email", 2 }, { err.code, err.field, err.index })
            assert.matches("entry 2: email is required", err.message, 1, true)
            assert.are.equal(0, count_rows())
        end)

        it("takes err.index from the COPY's own context line, after a trigger's, and is_active's default", function()
            assert(db:exec([[CREATE FUNCTION spec_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN IF NEW.first_name = 'refused' THEN RAISE EXCEPTION 'refused by trigger'; END IF;
                RETURN NEW; END $$]]))
            assert(db:exec([[CREATE TRIGGER spec_refuse BEFORE INSERT ON users
                FOR EACH ROW EXECUTE PROCEDURE spec_refuse()]]))
            finally(function()
                assert(db:exec("DROP TRIGGER spec_refuse ON users"))
                assert(db:exec("DROP FUNCTION spec_refuse()"))
            end)
            local n, err = users:create_many { { email = "t1@x.org" }, { email = "t2@x.org" },
                { email = "t3@x.org", first_name = "refused" } }
            assert.is_nil(n)
            assert.are.equal("raise_exception", err.code)
            assert.are.equal(3, err.index)
            assert.matches("entry 3: refused by trigger", err.message, 1, true)
            assert.are.equal(0, count_rows())
            -- an absent is_active is written as the model's server default, the column's own
            local default = require("kronos.core").users_model().fields.is_active.server_default
            assert.are.equal(1, users:create_many { { email = "t4@x.org" } })
            assert.are.equal(default, tostring(users:find_by_email("t4@x.org").is_active))
        end)

        it("refuses duplicate emails in the batch and against the table with duplicate_email", function()
            local n, err = users:create_many { { email = "d1@x.org" }, { email = "d2@x.org" }, { email = " D1@x.org" } }
            assert.is_nil(n)
            assert.are.equal("duplicate_email", err.code)
            assert.are.equal(3, err.index)
            assert.are.equal("email", err.field)
            assert.are.equal(0, count_rows())
            assert(users:create { email = "d2@x.org" })
            n, err = users:create_many { { email = "d1@x.org" }, { email = "D2@x.org" }, { email = "d3@x.org" } }
            assert.is_nil(n)
            assert.are.equal("duplicate_email", err.code)
            assert.are.equal(2, err.index)
            assert.are.equal("23505", err.sqlstate)
            assert.are.equal(1, count_rows())
        end)

        it("streams a batch of many COPY chunks whole or not at all, with distinct v4 ids", function()
            -- about 3 MB of lines: dozens of 64 KB chunks reach the server before the last entry
            local url_tail = ("/p"):rep(500)
            local batch = {}
            for i = 1, 3000 do
                batch[i] = { email = ("chunk%04d@x.org"):format(i), profile_image_url = "https://x.org" .. url_tail .. i }
            end
            batch[3000].email = "CHUNK0001@x.org" -- the first entry's email again, in the last chunk
            local n, err = users:create_many(batch)
            assert.is_nil(n)
            assert.are.equal("duplicate_email", err.code)
            assert.are.equal(3000, err.index)
            assert.are.equal(0, count_rows())
            assert.are.equal("ok", db:status())
            batch[3000].email = "chunk3000@x.org"
            assert.are.equal(3000, users:create_many(batch))
            local r = db:exec([[SELECT count(*) AS n, count(DISTINCT id) AS ids,
                count(*) FILTER (WHERE id::text ~ '^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$') AS v4,
                count(*) FILTER (WHERE profile_image_url
                    = 'https://x.org' || repeat('/p', 500) || substr(email, 6, 4)::int) AS urls
                FROM users]])[1]
            assert.are.same({ n = 3000, ids = 3000, v4 = 3000, urls = 3000 }, { n = r.n, ids = r.ids, v4 = r.v4, urls = r.urls })
            -- the 122 random bits are random: every hex digit outside the fixed ones takes many values
            local digits = {}
            for _, row in ipairs(db:exec("SELECT id::text FROM users")) do
                for pos = 1, 36 do
                    local ch = row.id:sub(pos, pos)
                    digits[pos] = digits[pos] or {}
                    digits[pos][ch] = true
                end
            end
            for pos = 1, 36 do
                local kinds = 0
                for _ in pairs(digits[pos]) do kinds = kinds + 1 end
                local expect = (pos == 9 or pos == 14 or pos == 19 or pos == 24 or pos == 15) and 1 or pos == 20 and 4 or 16
                assert.are.equal(expect, kinds, "position " .. pos)
            end
        end)

        it("leaves the connection usable after a refused batch", function()
            assert(users:create { email = "x1@x.org" })
            assert.is_nil(users:create_many { { email = "x1@x.org" } })
            assert.are.equal("ok", db:status())
            assert.is_false(db:in_transaction())
            assert.are.equal(2, users:create_many { { email = "x2@x.org" }, { email = "x3@x.org" } })
            assert.are.equal(3, users:count())
        end)

        it("joins the caller's transaction", function()
            local ok = pcall(db.transaction, db, function()
                assert.are.equal(2, users:create_many { { email = "t1@x.org" }, { email = "t2@x.org" } })
                error("roll back")
            end)
            assert.is_false(ok)
            assert.are.equal(0, count_rows())
        end)
    end)

    describe("prepared statements on a direct connection", function()
        local function prepared(conn)
            return assert(conn:exec("SELECT count(*) AS n FROM pg_prepared_statements WHERE name LIKE 'kronos%'"))[1].n
        end

        it("are made once per statement and session, and made again when the session lost them", function()
            local c = assert(kronos.connect(url))
            finally(function() c:close() end)
            local u = kronos.users(c)
            local ada = assert(u:create { email = "ada@example.com", first_name = "Ada" })
            assert(u:create { email = "bob@example.com", first_name = "Bob" })
            assert.same(ada, assert(u:get(ada.id)))
            assert.equal(2, prepared(c)) -- one create (same fields), one get
            for _, sql in ipairs { "DEALLOCATE ALL", "DISCARD ALL" } do
                assert(c:exec(sql))
                assert(c:exec("SET TimeZone TO 'UTC'"))
                assert.same(ada, assert(u:get(ada.id)))
                assert(u:create { email = sql:lower():gsub(" ", "") .. "@example.com", first_name = "X" })
                assert.equal(2, prepared(c))
            end
            -- a new session (reset) knows none of them
            assert(c:reset())
            assert.equal(0, prepared(c))
            assert.same(ada, assert(u:get(ada.id)))
            assert.equal(1, prepared(c))
            -- inside a transaction block nothing is retried: the caller's transaction failed
            local ok, err = pcall(c.transaction, c, function()
                assert(c:exec("DEALLOCATE ALL"))
                local none, gerr = u:get(ada.id)
                assert.is_nil(none)
                assert.equal("26000", gerr.sqlstate)
                error(gerr)
            end)
            assert.is_false(ok)
            assert.equal("26000", err.sqlstate)
            assert.same(ada, assert(u:get(ada.id)))
        end)

        it("follow a change of the table's column types made by another session", function()
            local c = assert(kronos.connect(url))
            finally(function()
                assert(db:exec("ALTER TABLE users ALTER COLUMN first_name TYPE varchar(100)"))
                c:close()
            end)
            local u = kronos.users(c)
            local ada = assert(u:create { email = "ada@example.com", first_name = "Ada" })
            assert.same(ada, assert(u:get(ada.id)))
            assert(db:exec("ALTER TABLE users ALTER COLUMN first_name TYPE varchar(200)"))
            assert.same(ada, assert(u:get(ada.id)))
            assert.equal("Bob", assert(u:create { email = "bob@example.com", first_name = "Bob" }).first_name)
        end)
    end)

    describe("two connections creating the same email at once", function()
        local RACER = [[
            local kronos = require "kronos"
            local c = assert(kronos.connect(arg[1]))
            local u, err = kronos.users(c):create { email = arg[2] }
            io.write(u and ("created " .. u.id) or ("error " .. err.code))
            c:close()
        ]]

        -- A second process inserts the email while this connection holds an uncommitted insert of
        -- it: the server makes the second insert wait on the first, then decides.
        local function race(finish)
            local email = "race" .. kronos.uuid():sub(1, 8) .. "@x.org"
            assert(db:exec("BEGIN"))
            local mine = assert(users:create { email = email })
            local proc = spawn(RACER, url, email)
            local watcher = assert(kronos.connect(url))
            local waiting = false
            for _ = 1, 3000 do -- until the other backend waits on our row lock (at most ~30 s)
                local r = watcher:exec([[SELECT count(*) AS n FROM pg_stat_activity
                    WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE 'INSERT INTO users%']])
                if r[1].n > 0 then waiting = true break end
                watcher:exec("SELECT pg_sleep(0.01)")
            end
            watcher:close()
            assert(db:exec(finish))
            local out = proc:read("*a")
            proc:close()
            assert.is_true(waiting, "the second insert never waited at the server")
            return mine, out, email
        end

        it("one succeeds and the other gets duplicate_email", function()
            local mine, out, email = race("COMMIT")
            assert.are.equal("error duplicate_email", out)
            assert.are.same(mine, users:find_by_email(email))
            assert.are.equal(1, users:count())
        end)

        it("the waiting one succeeds when the first rolls back", function()
            local _, out, email = race("ROLLBACK")
            local id = out:match("^created (%S+)$")
            assert.is_string(id)
            assert.are.equal(id, users:find_by_email(email).id)
            assert.are.equal(1, users:count())
        end)
    end)
end)
