-- The user model's C constants (src/users.h, src/validate.h, read through
-- kronos.core.users_model()) proven against the table the users migration really creates: the
-- column list, each field's type and lengths, the constraint names and kinds. The migration's bytes
-- never change, so these facts live twice; this spec is what keeps the two equal.
local H = require "spec.helper"
local kronos = require "kronos"
local core = require "kronos.core"
local migrate = require "kronos.migrate"

local DIR = H.root .. "/migrations"

local function rows(db, sql, ...)
    local out = {}
    for i, r in ipairs(assert(db:exec(sql, ...))) do out[i] = r end
    return out
end

-- What the server says about public.users: columns in order with type and length, each column's
-- default expression (pg_attrdef), constraints by name with kind, columns and definition.
local function catalog(db)
    local cat = { columns = {}, types = {}, defaults = {}, constraints = {} }
    for _, r in ipairs(rows(db, [[
        SELECT column_name, data_type, character_maximum_length AS len FROM information_schema.columns
        WHERE table_schema = 'public' AND table_name = 'users' ORDER BY ordinal_position]])) do
        cat.columns[#cat.columns + 1] = r.column_name
        cat.types[r.column_name] = { type = r.data_type, len = r.len ~= kronos.null and tonumber(r.len) or nil }
    end
    for _, r in ipairs(rows(db, [[
        SELECT a.attname, pg_get_expr(d.adbin, d.adrelid) AS def FROM pg_attrdef d
        JOIN pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum
        WHERE d.adrelid = 'public.users'::regclass]])) do
        cat.defaults[r.attname] = r.def
    end
    for _, r in ipairs(rows(db, [[
        SELECT c.conname, c.contype, pg_get_constraintdef(c.oid) AS def,
               (SELECT string_agg(a.attname, ',' ORDER BY a.attnum) FROM pg_attribute a
                WHERE a.attrelid = c.conrelid AND a.attnum = ANY (c.conkey)) AS cols
        FROM pg_constraint c WHERE c.conrelid = 'public.users'::regclass]])) do
        cat.constraints[r.conname] = { kind = r.contype, cols = r.cols, def = r.def }
    end
    return cat
end

-- Every way the model disagrees with the catalog, as a list of one-line reasons ({} when none).
local function mismatches(m, cat)
    local bad = {}
    local function check(ok, fmt, ...)
        if not ok then bad[#bad + 1] = fmt:format(...) end
    end
    check(m.table == "users", "table %s", tostring(m.table))
    check(#m.columns == #cat.columns, "%d columns in the model, %d in the table", #m.columns, #cat.columns)
    for i = 1, math.max(#m.columns, #cat.columns) do
        check(m.columns[i] == cat.columns[i], "column %d: model %s, table %s", i, tostring(m.columns[i]),
              tostring(cat.columns[i]))
    end
    for name, pos in pairs(m.positions) do
        check(cat.columns[pos] == name, "position of %s: %s is %s", name, tostring(pos), tostring(cat.columns[pos]))
    end
    for name, f in pairs(m.fields) do
        local t = cat.types[name]
        check(t ~= nil, "field %s is no column", name)
        if t and f.kind == "boolean" then
            check(t.type == "boolean" and f.max_length == nil, "field %s: %s", name, t.type)
        elseif t then
            check(t.type == "character varying", "field %s: %s", name, t.type)
            check(f.max_length == t.len, "field %s: max_length %s, column holds %s", name, tostring(f.max_length),
                  tostring(t.len))
        end
        -- create_many writes a field's server_default for an absent field: it must be the column's
        check(f.server_default == cat.defaults[name], "field %s: server_default %s, the column's default %s", name,
              tostring(f.server_default), tostring(cat.defaults[name]))
        if f.min_length ~= nil or name == "email" then
            local ck = cat.constraints[m.constraints.email_length]
            local min = ck and ck.def:match("^CHECK %(%(?char_length%(%(?" .. name .. "%)?[:%a]*%) >= (%d+)%)%)?$")
            check(tonumber(min) == f.min_length, "field %s: min_length %s, the CHECK says %s", name,
                  tostring(f.min_length), tostring(min))
        end
    end
    local want = { primary_key = { "p", "id" }, email_unique = { "u", "email" }, email_length = { "c", "email" } }
    for key, name in pairs(m.constraints) do
        local c = cat.constraints[name]
        check(want[key] ~= nil, "unknown constraint role %s", key)
        check(c ~= nil, "no constraint %s (%s)", tostring(name), key)
        if c and want[key] then
            check(c.kind == want[key][1] and c.cols == want[key][2], "constraint %s: kind %s on %s", name, c.kind,
                  tostring(c.cols))
        end
    end
    for key in pairs(want) do check(m.constraints[key] ~= nil, "the model names no %s", key) end
    return bad
end

local function copy(t)
    if type(t) ~= "table" then return t end
    local out = {}
    for k, v in pairs(t) do out[k] = copy(v) end
    return out
end

describe("the user model's constants", function()
    local url, dbname, db, cat
    setup(function()
        url, dbname = H.fresh_db("umodel")
        db = assert(kronos.connect(url))
        assert(migrate.upgrade { dir = DIR, db = db })
        cat = catalog(db)
    end)
    teardown(function()
        db:close()
        H.drop_db(dbname)
    end)

    it("are what the migration created", function()
        local m = core.users_model()
        assert.same({}, mismatches(m, cat))
        -- the facts themselves, so that the check above is seen to look at something
        assert.same({ "id", "email", "first_name", "last_name", "is_active", "profile_image_url", "last_login",
                      "created_at", "updated_at" }, m.columns)
        assert.same({ kind = "email", min_length = 5, max_length = 255 }, m.fields.email)
        assert.same({ kind = "url", max_length = 2048 }, m.fields.profile_image_url)
        assert.same({ kind = "text", max_length = 100 }, m.fields.last_name)
        assert.same({ kind = "boolean", server_default = "true" }, m.fields.is_active)
        assert.same("true", cat.defaults.is_active)
        assert.same({ primary_key = "pk_users", email_unique = "uq_users_email",
                      email_length = "ck_users_email_length" }, m.constraints)
        assert.same("CHECK ((char_length((email)::text) >= 5))", cat.constraints.ck_users_email_length.def)
    end)

    it("fail the check when any one of them changes", function()
        local m = core.users_model()
        local mutations = {
            function(x) x.columns[3] = "firstname" end,
            function(x) x.columns[#x.columns + 1] = "deleted_at" end,
            function(x) table.remove(x.columns) end,
            function(x) x.columns[1], x.columns[2] = x.columns[2], x.columns[1] end,
            function(x) x.positions.id = 2 end,
            function(x) x.positions.created_at = 9 end,
            function(x) x.fields.email.max_length = 254 end,
            function(x) x.fields.email.min_length = 6 end,
            function(x) x.fields.first_name.max_length = 101 end,
            function(x) x.fields.last_name.max_length = 99 end,
            function(x) x.fields.profile_image_url.max_length = 2000 end,
            function(x) x.fields.is_active.kind = "text" end,
            function(x) x.fields.is_active.server_default = "false" end,
            function(x) x.fields.is_active.server_default = nil end,
            function(x) x.fields.first_name.server_default = "''" end,
            function(x) x.fields.nickname = { kind = "text", max_length = 100 } end,
            function(x) x.constraints.primary_key = "users_pkey" end,
            function(x) x.constraints.email_unique = "users_email_key" end,
            function(x) x.constraints.email_length = "ck_users_email_len" end,
            function(x) x.constraints.email_unique, x.constraints.primary_key = "pk_users", "uq_users_email" end,
        }
        for i, mutate in ipairs(mutations) do
            local x = copy(m)
            mutate(x)
            assert.is_true(#mismatches(x, cat) > 0, "mutation " .. i .. " passed the check")
        end
    end)

    it("cannot be changed from Lua", function()
        local m = core.users_model()
        m.fields.email.max_length = 1
        m.constraints.email_unique = "x"
        m.columns[1] = "x"
        m.fields.is_active.server_default = "false"
        local again = core.users_model()
        assert.equal("true", again.fields.is_active.server_default)
        assert.equal(255, again.fields.email.max_length)
        assert.equal("uq_users_email", again.constraints.email_unique)
        assert.equal("id", again.columns[1])
    end)

    it("are the ones the model's behaviour uses", function()
        local users = kronos.users(db)
        local u = assert(users:create { email = "model@example.com" })
        -- the email's unique constraint, mapped by its name
        local _, err = users:create { email = "model@example.com" }
        assert.equal("duplicate_email", err.code)
        -- the lengths the validation uses are the model's
        local m = core.users_model()
        _, err = users:create { email = "a@b." .. ("c"):rep(m.fields.email.max_length) }
        assert.equal("too_long", err.code)
        _, err = users:update(u.id, { last_name = ("é"):rep(m.fields.last_name.max_length + 1) })
        assert.equal("too_long", err.code)
        assert.truthy(users:update(u.id, { last_name = ("é"):rep(m.fields.last_name.max_length) }))
        _, err = users:create { email = "a@b" }
        assert.equal("email must be at least " .. m.fields.email.min_length .. " characters", err.message)
        -- create_many writes an absent is_active as the model's server_default
        assert.equal(1, users:create_many { { email = "model.batch@example.com" } })
        assert.equal(m.fields.is_active.server_default, tostring(users:find_by_email("model.batch@example.com").is_active))
        -- the email length CHECK, mapped by its name, when the server is the one refusing
        local ok, e = db:exec("INSERT INTO users (id, email) VALUES ($1, 'a@b')", kronos.uuid())
        assert.is_nil(ok)
        assert.equal(m.constraints.email_length, e.constraint)
    end)
end)
