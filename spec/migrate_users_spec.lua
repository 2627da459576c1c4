-- The users migration (migrations/4f1c2a9e7b30_create_users_table.lua): the exact table of the
-- seed, read back from pg_catalog; down removes all of it; offline SQL builds the same schema.
local H = require "spec.helper"
local kronos = require "kronos"
local migrate = require "kronos.migrate"

local DIR = H.root .. "/migrations"
local REV = "4f1c2a9e7b30"

local function rows(db, sql)
    local out = {}
    for i, r in ipairs(assert(db:exec(sql))) do out[i] = r end
    return out
end

local function columns(db)
    local out = {}
    for _, r in ipairs(rows(db, [[
        SELECT a.attname, format_type(a.atttypid, a.atttypmod) AS type, a.attnotnull,
               pg_get_expr(d.adbin, d.adrelid) AS dflt
        FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE a.attrelid = 'public.users'::regclass AND a.attnum > 0 AND NOT a.attisdropped
        ORDER BY a.attnum]])) do
        out[#out + 1] = { r.attname, r.type, r.attnotnull, r.dflt ~= kronos.null and r.dflt or nil }
    end
    return out
end

local function constraints(db)
    local out = {}
    for _, r in ipairs(rows(db, [[SELECT conname, contype, pg_get_constraintdef(oid) AS def FROM pg_constraint
                                  WHERE conrelid = 'public.users'::regclass ORDER BY conname]])) do
        out[#out + 1] = { r.conname, r.contype, r.def }
    end
    return out
end

local function indexes(db)
    local out = {}
    for _, r in ipairs(rows(db, [[SELECT c.relname, pg_get_indexdef(i.indexrelid) AS def FROM pg_index i
                                  JOIN pg_class c ON c.oid = i.indexrelid
                                  WHERE i.indrelid = 'public.users'::regclass ORDER BY c.relname]])) do
        out[#out + 1] = { r.relname, r.def }
    end
    return out
end

local function users_exists(db)
    return rows(db, "SELECT to_regclass('public.users') IS NOT NULL AS e")[1].e
end

describe("the users migration", function()
    local url, dbname, db
    setup(function()
        url, dbname = H.fresh_db("musers")
        db = assert(kronos.connect(url))
    end)
    teardown(function()
        db:close()
        H.drop_db(dbname)
    end)

    it("has a fixed revision and is the only head", function()
        assert.same({ REV }, migrate.heads { dir = DIR })
    end)

    it("creates exactly the seed's table", function()
        assert.same({ REV }, migrate.upgrade { dir = DIR, db = db })
        assert.same({
            { "id", "uuid", true },
            { "email", "character varying(255)", true },
            { "first_name", "character varying(100)", false },
            { "last_name", "character varying(100)", false },
            { "is_active", "boolean", true, "true" },
            { "profile_image_url", "character varying(2048)", false },
            { "last_login", "timestamp with time zone", false },
            { "created_at", "timestamp with time zone", true, "now()" },
            { "updated_at", "timestamp with time zone", true, "now()" },
        }, columns(db))
        assert.same({
            { "ck_users_email_length", "c", "CHECK ((char_length((email)::text) >= 5))" },
            { "pk_users", "p", "PRIMARY KEY (id)" },
            { "uq_users_email", "u", "UNIQUE (email)" },
        }, constraints(db))
        assert.same({
            { "ix_users_created_at", "CREATE INDEX ix_users_created_at ON public.users USING btree (created_at)" },
            { "ix_users_is_active", "CREATE INDEX ix_users_is_active ON public.users USING btree (is_active)" },
            { "ix_users_updated_at", "CREATE INDEX ix_users_updated_at ON public.users USING btree (updated_at)" },
            { "pk_users", "CREATE UNIQUE INDEX pk_users ON public.users USING btree (id)" },
            { "uq_users_email", "CREATE UNIQUE INDEX uq_users_email ON public.users USING btree (email)" },
        }, indexes(db))
        assert.same({ REV }, migrate.current { dir = DIR, db = db })
        assert.is_true((migrate.check { dir = DIR, db = db }))
    end)

    it("goes down to nothing and up to the same schema", function()
        local cols, cons, ixs = columns(db), constraints(db), indexes(db)
        assert.same({ REV }, migrate.downgrade { dir = DIR, db = db })
        assert.is_false(users_exists(db))
        assert.same({}, rows(db, [[SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace
                                   AND relname LIKE '%users%']]))
        assert.same({}, rows(db, "SELECT * FROM kronos_version"))
        assert.same({}, migrate.current { dir = DIR, db = db })
        assert.same({ REV }, migrate.upgrade { dir = DIR, db = db })
        assert.same(cols, columns(db))
        assert.same(cons, constraints(db))
        assert.same(ixs, indexes(db))
    end)

    it("offline SQL, run by psql, builds the same schema and version", function()
        local cols, cons, ixs = columns(db), constraints(db), indexes(db)
        local sql = migrate.upgrade { dir = DIR, sql = true }
        local path = os.tmpname()
        local f = assert(io.open(path, "w"))
        f:write(sql)
        f:close()
        local url2, name2 = H.fresh_db("musers_sql")
        local code, out = H.run(("psql -X -q -v ON_ERROR_STOP=1 -d %q -f %q"):format(url2, path))
        os.remove(path)
        assert.equal(0, code, out)
        local db2 = assert(kronos.connect(url2))
        assert.same(cols, columns(db2))
        assert.same(cons, constraints(db2))
        assert.same(ixs, indexes(db2))
        assert.same({ REV }, migrate.current { dir = DIR, db = db2 })
        assert.is_true((migrate.check { dir = DIR, db = db2 }))
        -- and the offline downgrade undoes it
        local down = migrate.downgrade { dir = DIR, sql = true, target = REV .. ":base" }
        path = os.tmpname()
        f = assert(io.open(path, "w"))
        f:write(down)
        f:close()
        code, out = H.run(("psql -X -q -v ON_ERROR_STOP=1 -d %q -f %q"):format(url2, path))
        os.remove(path)
        assert.equal(0, code, out)
        assert.is_false(users_exists(db2))
        db2:close()
        H.drop_db(name2)
    end)
end)
