-- The DDL generator (src/ddl*.c): the exact SQL of each builder, then what the server makes of
-- it, read back from pg_catalog; hostile names and literals; misuse raising with the argument named.
local kronos = require "kronos"
local H = require "spec.helper"

local ddl = kronos.ddl

describe("kronos.ddl", function()
    local dbname, db

    setup(function()
        local url
        url, dbname = H.fresh_db("ddl")
        db = assert(kronos.connect(url))
    end)

    teardown(function()
        db:close()
        H.drop_db(dbname)
    end)

    -- Runs the statements one by one, as the migration engine does.
    local function run(stmts)
        for _, sql in ipairs(stmts) do assert(db:exec(sql)) end
    end

    -- Rows as plain arrays (without .affected and .columns), for assert.are.same.
    local function plain(rows)
        local out = {}
        for i, r in ipairs(rows) do out[i] = r end
        return out
    end

    local function columns(tbl, schema)
        return plain(assert(db:exec([[
            SELECT a.attname AS name, format_type(a.atttypid, a.atttypmod) AS type,
                   a.attnotnull AS notnull, pg_get_expr(d.adbin, d.adrelid) AS dflt
            FROM pg_attribute a
            JOIN pg_class c ON c.oid = a.attrelid
            JOIN pg_namespace n ON n.oid = c.relnamespace
            LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
            WHERE c.relname = $1 AND n.nspname = $2 AND a.attnum > 0 AND NOT a.attisdropped
            ORDER BY a.attnum]], tbl, schema or "public")))
    end

    local function constraints(tbl, schema)
        local rows = assert(db:exec([[
            SELECT k.conname AS name, k.contype AS kind, pg_get_constraintdef(k.oid) AS def
            FROM pg_constraint k
            JOIN pg_class c ON c.oid = k.conrelid
            JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE c.relname = $1 AND n.nspname = $2 AND k.contype <> 'n'
            ORDER BY k.conname COLLATE "C"]], tbl, schema or "public"))
        local out = {}
        for _, r in ipairs(rows) do out[#out + 1] = { r.name, r.kind, r.def } end
        return out
    end

    local function indexes(tbl, schema)
        local rows = assert(db:exec([[
            SELECT indexname, indexdef FROM pg_indexes
            WHERE tablename = $1 AND schemaname = $2 ORDER BY indexname COLLATE "C"]], tbl, schema or "public"))
        local out = {}
        for _, r in ipairs(rows) do out[#out + 1] = { r.indexname, r.indexdef } end
        return out
    end

    -- The message of the error fn raises.
    local function raises(fn, ...)
        local ok, err = pcall(fn, ...)
        assert.is_false(ok, "expected an error")
        return tostring(err)
    end

    local users_columns = {
        { name = "id", type = "uuid", primary_key = true },
        { name = "email", type = "string(255)", nullable = false, unique = true },
        { name = "first_name", type = "string(100)" },
        { name = "last_name", type = "string(100)" },
        { name = "is_active", type = "boolean", nullable = false, server_default = true, index = true },
        { name = "profile_image_url", type = "string(2048)" },
        { name = "last_login", type = "timestamptz" },
        { name = "created_at", type = "timestamptz", nullable = false, server_default = ddl.sql("now()"), index = true },
        { name = "updated_at", type = "timestamptz", nullable = false, server_default = ddl.sql("now()"), index = true },
    }
    local users_opts = {
        constraints = { { kind = "check", name = "ck_users_email_length", condition = "char_length(email) >= 5" } },
    }

    local function member_table(schema, ref_schema)
        return ddl.create_table("member", {
            { name = "org", type = "bigint", primary_key = true },
            { name = "uid", type = "uuid", primary_key = true },
            { name = "score", type = "numeric(10, 2)", server_default = 0.5, check = ddl.sql("score >= 0") },
            { name = "nick", type = "text", unique = true, index = true },
            { name = "tags", type = "string(20)[]", server_default = ddl.sql("'{}'") },
        }, {
            schema = schema or "app",
            if_not_exists = true,
            constraints = {
                { kind = "unique", columns = { "org", "nick" } },
                { kind = "check", columns = { "org" }, condition = "org > 0" },
                { kind = "foreign_key", columns = { "uid" }, references = "users", referent_schema = ref_schema or "public",
                  remote_columns = { "id" }, ondelete = "cascade", onupdate = "no  action" },
            },
        })
    end

    describe("generates exactly", function()
        it("create_table for the seed's users table", function()
            assert.are.same({
                'CREATE TABLE "users" (\n' ..
                '    "id" uuid NOT NULL,\n' ..
                '    "email" varchar(255) NOT NULL,\n' ..
                '    "first_name" varchar(100),\n' ..
                '    "last_name" varchar(100),\n' ..
                '    "is_active" boolean DEFAULT true NOT NULL,\n' ..
                '    "profile_image_url" varchar(2048),\n' ..
                '    "last_login" timestamptz,\n' ..
                '    "created_at" timestamptz DEFAULT now() NOT NULL,\n' ..
                '    "updated_at" timestamptz DEFAULT now() NOT NULL,\n' ..
                '    CONSTRAINT "pk_users" PRIMARY KEY ("id"),\n' ..
                '    CONSTRAINT "uq_users_email" UNIQUE ("email"),\n' ..
                '    CONSTRAINT "ck_users_email_length" CHECK (char_length(email) >= 5)\n' ..
                ')',
                'CREATE INDEX "ix_users_is_active" ON "users" ("is_active")',
                'CREATE INDEX "ix_users_created_at" ON "users" ("created_at")',
                'CREATE INDEX "ix_users_updated_at" ON "users" ("updated_at")',
            }, ddl.create_table("users", users_columns, users_opts))
        end)

        it("create_table with a schema, if_not_exists, composite keys and every constraint kind", function()
            local stmts = member_table()
            assert.are.same({
                'CREATE TABLE IF NOT EXISTS "app"."member" (\n' ..
                '    "org" bigint NOT NULL,\n' ..
                '    "uid" uuid NOT NULL,\n' ..
                '    "score" numeric(10,2) DEFAULT 0.5,\n' ..
                '    "nick" text,\n' ..
                '    "tags" varchar(20)[] DEFAULT \'{}\',\n' ..
                '    CONSTRAINT "pk_member" PRIMARY KEY ("org", "uid"),\n' ..
                '    CONSTRAINT "ck_member_score" CHECK (score >= 0),\n' ..
                '    CONSTRAINT "uq_member_org_nick" UNIQUE ("org", "nick"),\n' ..
                '    CONSTRAINT "ck_member_org" CHECK (org > 0),\n' ..
                '    CONSTRAINT "fk_member_uid_users" FOREIGN KEY ("uid") REFERENCES "public"."users" ("id")' ..
                ' ON DELETE CASCADE ON UPDATE NO ACTION\n' ..
                ')',
                'CREATE UNIQUE INDEX IF NOT EXISTS "ix_member_nick" ON "app"."member" ("nick")',
            }, stmts)
        end)

        it("the table and column builders", function()
            assert.are.same({ 'DROP TABLE "users"' }, ddl.drop_table("users"))
            assert.are.same({ 'DROP TABLE IF EXISTS "s"."users" CASCADE' },
                ddl.drop_table("users", { schema = "s", if_exists = true, cascade = true }))
            assert.are.same({ 'ALTER TABLE "s"."a" RENAME TO "b"' }, ddl.rename_table("a", "b", { schema = "s" }))
            assert.are.same({
                'ALTER TABLE "t" ADD COLUMN IF NOT EXISTS "c" integer DEFAULT -3 NOT NULL'
                    .. ' CONSTRAINT "uq_t_c" UNIQUE CONSTRAINT "ck_t_c" CHECK (c <> 0)',
            }, ddl.add_column("t", { name = "c", type = "int", nullable = false, unique = true,
                                     server_default = -3, check = "c <> 0" }, { if_not_exists = true }))
            assert.are.same({
                'ALTER TABLE "t" ADD COLUMN "id" bigserial NOT NULL CONSTRAINT "pk_t" PRIMARY KEY',
            }, ddl.add_column("t", { name = "id", type = "bigserial", primary_key = true }))
            assert.are.same({
                'ALTER TABLE "t" ADD COLUMN "at" timestamp(3)',
                'CREATE INDEX "ix_t_at" ON "t" ("at")',
            }, ddl.add_column("t", { name = "at", type = "timestamp(3)", index = true }))
            assert.are.same({ 'ALTER TABLE "t" DROP COLUMN IF EXISTS "c" CASCADE' },
                ddl.drop_column("t", "c", { if_exists = true, cascade = true }))
            assert.are.same({
                'ALTER TABLE "t" ALTER COLUMN "c" DROP DEFAULT, ALTER COLUMN "c" TYPE bigint USING c::bigint,'
                    .. ' ALTER COLUMN "c" SET DEFAULT 7, ALTER COLUMN "c" SET NOT NULL',
                'ALTER TABLE "t" RENAME COLUMN "c" TO "d"',
            }, ddl.alter_column("t", "c", { type = "BIGINT", using = "c::bigint", server_default = 7,
                                            nullable = false, new_name = "d" }))
            assert.are.same({ 'ALTER TABLE "t" ALTER COLUMN "c" DROP DEFAULT, ALTER COLUMN "c" DROP NOT NULL' },
                ddl.alter_column("t", "c", { server_default = false, nullable = true }))
            assert.are.same({ 'ALTER TABLE "t" RENAME COLUMN "c" TO "d"' }, ddl.alter_column("t", "c", { new_name = "d" }))
        end)

        it("the index and constraint builders", function()
            assert.are.same({ 'CREATE INDEX "ix_t_a_b" ON "t" ("a", "b")' }, ddl.create_index(nil, "t", { "a", "b" }))
            assert.are.same({
                'CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS "ix_lower" ON "s"."t" USING "btree"'
                    .. ' ((lower(email)), "b" DESC NULLS LAST, "c" "text_pattern_ops") WHERE deleted_at IS NULL',
            }, ddl.create_index("ix_lower", "t",
                { ddl.sql("lower(email)"), { "b", desc = true, nulls = "last" }, { "c", opclass = "text_pattern_ops" } },
                { schema = "s", unique = true, concurrently = true, if_not_exists = true, using = "BTree",
                  where = "deleted_at IS NULL" }))
            assert.are.same({ 'CREATE UNIQUE INDEX "ix_t_a" ON "t" ("a")' },
                ddl.create_index(nil, "t", { "a" }, { unique = true }))
            assert.are.same({ 'DROP INDEX CONCURRENTLY IF EXISTS "s"."ix"' },
                ddl.drop_index("ix", { schema = "s", concurrently = true, if_exists = true }))
            assert.are.same({ 'ALTER TABLE "t" ADD CONSTRAINT "uq_t_a_b" UNIQUE ("a", "b")' },
                ddl.create_unique_constraint(nil, "t", { "a", "b" }))
            assert.are.same({ 'ALTER TABLE "t" ADD CONSTRAINT "ck_t_a" CHECK (a > 0) NOT VALID' },
                ddl.create_check_constraint(nil, "t", "a > 0", { column_hint = "a", not_valid = true }))
            assert.are.same({ 'ALTER TABLE "s"."t" ADD CONSTRAINT "positive" CHECK (a > 0)' },
                ddl.create_check_constraint("positive", "t", ddl.sql("a > 0"), { schema = "s" }))
            assert.are.same({
                'ALTER TABLE "t" ADD CONSTRAINT "fk_t_a_r" FOREIGN KEY ("a", "b") REFERENCES "rs"."r" ("x", "y")'
                    .. ' ON DELETE SET NULL ON UPDATE SET DEFAULT DEFERRABLE INITIALLY DEFERRED',
            }, ddl.create_foreign_key(nil, "t", "r", { "a", "b" }, { "x", "y" },
                { ondelete = "set null", onupdate = " Set\tDefault ", referent_schema = "rs", deferrable = true,
                  initially = "DEFERRED" }))
            assert.are.same({ 'ALTER TABLE "t" ADD CONSTRAINT "pk_t" PRIMARY KEY ("a", "b")' },
                ddl.create_primary_key(nil, "t", { "a", "b" }))
            assert.are.same({ 'ALTER TABLE "t" DROP CONSTRAINT IF EXISTS "uq_t_a" CASCADE' },
                ddl.drop_constraint("uq_t_a", "t", { if_exists = true, cascade = true }))
            assert.are.same({ "SELECT 1; SELECT 2" }, ddl.execute("SELECT 1; SELECT 2"))
        end)

        it("types, case-insensitive and whitespace-tolerant", function()
            local cases = {
                uuid = "uuid", ["string(255)"] = "varchar(255)", [" VarChar ( 10 ) "] = "varchar(10)",
                string = "varchar", text = "text", boolean = "boolean", bool = "boolean",
                smallint = "smallint", integer = "integer", int = "integer", bigint = "bigint",
                ["numeric(10,2)"] = "numeric(10,2)", ["numeric ( 5 )"] = "numeric(5)", numeric = "numeric",
                real = "real", double = "double precision", ["double   precision"] = "double precision",
                timestamptz = "timestamptz", ["timestamptz(3)"] = "timestamptz(3)", timestamp = "timestamp",
                ["timestamp with time zone"] = "timestamptz", date = "date", time = "time",
                interval = "interval", json = "json", jsonb = "jsonb", bytea = "bytea", serial = "serial",
                bigserial = "bigserial", ["integer[]"] = "integer[]", ["string(20) [ ]"] = "varchar(20)[]",
                ["text[][]"] = "text[][]", ["JSONB[]"] = "jsonb[]",
            }
            for input, want in pairs(cases) do assert.are.equal(want, ddl.parse_type(input), input) end
        end)

        it("quoted identifiers and literals", function()
            assert.are.equal('"users"', ddl.quote_ident("users"))
            assert.are.equal('"a""b"', ddl.quote_ident('a"b'))
            assert.are.equal("'it''s'", ddl.quote_literal("it's"))
            assert.are.equal("E'back\\\\slash'", ddl.quote_literal("back\\slash"))
            assert.are.equal("true", ddl.quote_literal(true))
            assert.are.equal("42", ddl.quote_literal(42))
            assert.are.equal("0.1", ddl.quote_literal(0.1))
            assert.are.equal("NULL", ddl.quote_literal(kronos.null))
            assert.are.equal("now()", ddl.quote_literal(ddl.sql("now()")))
            assert.is_true(ddl.is_sql(ddl.sql("now()")))
            assert.is_false(ddl.is_sql("now()"))
            assert.is_false(ddl.is_sql({ sql = "now()" }))
            assert.are.equal("now()", tostring(ddl.sql("now()")))
        end)

        it("conventional names, shortened with a hash past 63 bytes", function()
            assert.are.equal("ix_users_email", ddl.name("ix", "users", { "email" }))
            local long = ("t"):rep(63)
            local a = ddl.name("ix", long, { "a" })
            local b = ddl.name("ix", long, { "b" })
            assert.are.equal(63, #a)
            assert.are.equal("ix_" .. ("t"):rep(51) .. "_", a:sub(1, 55))
            assert.matches("^%x+$", a:sub(56))
            assert.are_not.equal(a, b)
            assert.are.equal(a, ddl.name("ix", long, { "a" }))   -- deterministic
            -- a cut never splits a UTF-8 character
            local u = ddl.name("ix", ("é"):rep(31), { "x" })
            assert.are.equal(62, #u)
            assert.are.equal("ix_" .. ("é"):rep(25) .. "_", u:sub(1, 54))
            assert.are.same({ 'ALTER TABLE "' .. long .. '" ADD CONSTRAINT "' .. ddl.name("pk", long)
                .. '" PRIMARY KEY ("a")' }, ddl.create_primary_key(nil, long, { "a" }))
        end)
    end)

    describe("on the server", function()
        local n = 0
        -- A schema of its own for each test, so the tests run in any order.
        local function new_schema()
            n = n + 1
            local name = ("ddl_%d_%s"):format(n, kronos.uuid():sub(1, 8))
            run({ "CREATE SCHEMA " .. ddl.quote_ident(name) })
            return name
        end

        it("builds the seed's users table exactly", function()
            local s = new_schema()
            run(ddl.create_table("users", users_columns, { schema = s, constraints = users_opts.constraints }))
            assert.are.same({
                { name = "id", type = "uuid", notnull = true },
                { name = "email", type = "character varying(255)", notnull = true },
                { name = "first_name", type = "character varying(100)", notnull = false },
                { name = "last_name", type = "character varying(100)", notnull = false },
                { name = "is_active", type = "boolean", notnull = true, dflt = "true" },
                { name = "profile_image_url", type = "character varying(2048)", notnull = false },
                { name = "last_login", type = "timestamp with time zone", notnull = false },
                { name = "created_at", type = "timestamp with time zone", notnull = true, dflt = "now()" },
                { name = "updated_at", type = "timestamp with time zone", notnull = true, dflt = "now()" },
            }, columns("users", s))
            assert.are.same({
                { "ck_users_email_length", "c", "CHECK ((char_length((email)::text) >= 5))" },
                { "pk_users", "p", "PRIMARY KEY (id)" },
                { "uq_users_email", "u", "UNIQUE (email)" },
            }, constraints("users", s))
            local on = s .. ".users USING btree "
            assert.are.same({
                { "ix_users_created_at", "CREATE INDEX ix_users_created_at ON " .. on .. "(created_at)" },
                { "ix_users_is_active", "CREATE INDEX ix_users_is_active ON " .. on .. "(is_active)" },
                { "ix_users_updated_at", "CREATE INDEX ix_users_updated_at ON " .. on .. "(updated_at)" },
                { "pk_users", "CREATE UNIQUE INDEX pk_users ON " .. on .. "(id)" },
                { "uq_users_email", "CREATE UNIQUE INDEX uq_users_email ON " .. on .. "(email)" },
            }, indexes("users", s))
            -- the defaults work and the check holds
            local id = kronos.uuid()
            local row = assert(db:exec(("INSERT INTO %s.users (id, email) VALUES ($1, $2)"
                .. " RETURNING is_active, created_at = now() AS fresh")
                :format(ddl.quote_ident(s)), id, "ann@example.com"))[1]
            assert.are.same({ is_active = true, fresh = true }, row)
            local _, err = db:exec(("INSERT INTO %s.users (id, email) VALUES ($1, 'a@b')"):format(ddl.quote_ident(s)),
                kronos.uuid())
            assert.are.equal("ck_users_email_length", err.constraint)
        end)

        it("maps every type, with lengths, precisions and arrays", function()
            local s = new_schema()
            local specs = {
                { "uuid", "uuid" }, { "string(255)", "character varying(255)" }, { "string", "character varying" },
                { "text", "text" }, { "boolean", "boolean" }, { "smallint", "smallint" }, { "integer", "integer" },
                { "bigint", "bigint" }, { "numeric(10, 2)", "numeric(10,2)" }, { "numeric", "numeric" },
                { "real", "real" }, { "double", "double precision" }, { "timestamptz", "timestamp with time zone" },
                { "timestamptz(3)", "timestamp(3) with time zone" }, { "timestamp", "timestamp without time zone" },
                { "date", "date" }, { "time", "time without time zone" }, { "interval", "interval" },
                { "json", "json" }, { "jsonb", "jsonb" }, { "bytea", "bytea" }, { "integer[]", "integer[]" },
                { "string(20)[]", "character varying(20)[]" }, { "Numeric(5,1) []", "numeric(5,1)[]" },
                { "timestamptz[]", "timestamp with time zone[]" }, { "uuid[][]", "uuid[]" }, { "bigserial", "bigint" },
            }
            local cols, want = {}, {}
            for i, t in ipairs(specs) do
                cols[i] = { name = "c" .. i, type = t[1], nullable = i % 2 == 0 }
                want[i] = { name = "c" .. i, type = t[2], notnull = i % 2 == 1 }
            end
            want[#want].dflt = ("nextval('%s.typed_c%d_seq'::regclass)"):format(s, #want)
            run(ddl.create_table("typed", cols, { schema = s }))
            assert.are.same(want, columns("typed", s))
        end)

        it("creates composite keys, every constraint kind and a unique index, in a schema", function()
            local s = new_schema()
            run(ddl.create_table("users", users_columns, { schema = s }))
            run({ "CREATE SCHEMA IF NOT EXISTS app" })
            local t = new_schema()
            run(member_table(t, s))
            run(member_table(t, s))   -- if_not_exists: a second run is a no-op
            assert.are.same({
                { "ck_member_org", "c", "CHECK ((org > 0))" },
                { "ck_member_score", "c", "CHECK ((score >= (0)::numeric))" },
                { "fk_member_uid_users", "f", ("FOREIGN KEY (uid) REFERENCES %s.users(id) ON DELETE CASCADE"):format(s) },
                { "pk_member", "p", "PRIMARY KEY (org, uid)" },
                { "uq_member_org_nick", "u", "UNIQUE (org, nick)" },
            }, constraints("member", t))
            assert.are.same({
                { "ix_member_nick", ("CREATE UNIQUE INDEX ix_member_nick ON %s.member USING btree (nick)"):format(t) },
                { "pk_member", ("CREATE UNIQUE INDEX pk_member ON %s.member USING btree (org, uid)"):format(t) },
                { "uq_member_org_nick",
                  ("CREATE UNIQUE INDEX uq_member_org_nick ON %s.member USING btree (org, nick)"):format(t) },
            }, indexes("member", t))
            assert.are.same({
                { name = "org", type = "bigint", notnull = true },
                { name = "uid", type = "uuid", notnull = true },
                { name = "score", type = "numeric(10,2)", notnull = false, dflt = "0.5" },
                { name = "nick", type = "text", notnull = false },
                { name = "tags", type = "character varying(20)[]", notnull = false, dflt = "'{}'::character varying[]" },
            }, columns("member", t))
        end)

        it("adds, alters, renames and drops columns and tables", function()
            local s = new_schema()
            local o = { schema = s }
            run(ddl.create_table("t", { { name = "id", type = "serial", primary_key = true } }, o))
            run(ddl.add_column("t", { name = "qty", type = "text", server_default = "1", check = "qty <> ''", unique = true }, o))
            run(ddl.add_column("t", { name = "at", type = "timestamptz", index = true }, o))
            run(ddl.add_column("t", { name = "at", type = "timestamptz", index = true }, { schema = s, if_not_exists = true }))
            assert.are.same({
                { "ck_t_qty", "c", "CHECK ((qty <> ''::text))" },
                { "pk_t", "p", "PRIMARY KEY (id)" },
                { "uq_t_qty", "u", "UNIQUE (qty)" },
            }, constraints("t", s))
            run(ddl.drop_constraint("ck_t_qty", "t", o))
            run(ddl.alter_column("t", "qty", { schema = s, type = "integer", using = "qty::integer",
                                               server_default = 5, nullable = false, new_name = "quantity" }))
            run(ddl.alter_column("t", "at", { schema = s, server_default = ddl.sql("now()") }))
            local cols = columns("t", s)
            assert.are.same({ name = "quantity", type = "integer", notnull = true, dflt = "5" }, cols[2])
            assert.are.same({ name = "at", type = "timestamp with time zone", notnull = false, dflt = "now()" }, cols[3])
            run(ddl.alter_column("t", "quantity", { schema = s, server_default = false, nullable = true }))
            assert.are.same({ name = "quantity", type = "integer", notnull = false }, columns("t", s)[2])
            run(ddl.drop_column("t", "at", o))
            run(ddl.drop_column("t", "at", { schema = s, if_exists = true }))
            assert.are.equal(2, #columns("t", s))
            assert.are.same({ "pk_t", "uq_t_qty" }, (function()
                local names = {}
                for i, idx in ipairs(indexes("t", s)) do names[i] = idx[1] end
                return names
            end)())
            run(ddl.rename_table("t", "t2", o))
            assert.are.equal(0, #columns("t", s))
            assert.are.equal(2, #columns("t2", s))
            run(ddl.drop_table("t2", o))
            run(ddl.drop_table("t2", { schema = s, if_exists = true, cascade = true }))
            assert.are.equal(0, #columns("t2", s))
        end)

        it("creates partial, expression, unique, descending and GIN indexes, and drops them", function()
            local s = new_schema()
            local o = { schema = s }
            run(ddl.create_table("doc", {
                { name = "id", type = "bigint", primary_key = true },
                { name = "email", type = "text" }, { name = "body", type = "jsonb" }, { name = "at", type = "timestamptz" },
            }, o))
            run(ddl.create_index(nil, "doc", { "email", "at" }, o))
            run(ddl.create_index("ix_doc_lower_email", "doc", { ddl.sql("lower(email)") },
                { schema = s, unique = true, where = "at IS NOT NULL" }))
            run(ddl.create_index("ix_doc_at", "doc", { { "at", desc = true, nulls = "last" } }, o))
            run(ddl.create_index("ix_doc_body", "doc", { "body" }, { schema = s, using = "gin", concurrently = true }))
            run(ddl.create_index("ix_doc_body", "doc", { "body" }, { schema = s, using = "gin", if_not_exists = true }))
            local on = " ON " .. s .. ".doc USING "
            assert.are.same({
                { "ix_doc_at", "CREATE INDEX ix_doc_at" .. on .. "btree (at DESC NULLS LAST)" },
                { "ix_doc_body", "CREATE INDEX ix_doc_body" .. on .. "gin (body)" },
                { "ix_doc_email_at", "CREATE INDEX ix_doc_email_at" .. on .. "btree (email, at)" },
                { "ix_doc_lower_email",
                  "CREATE UNIQUE INDEX ix_doc_lower_email" .. on .. "btree (lower(email)) WHERE (at IS NOT NULL)" },
                { "pk_doc", "CREATE UNIQUE INDEX pk_doc" .. on .. "btree (id)" },
            }, indexes("doc", s))
            run(ddl.drop_index("ix_doc_body", { schema = s, concurrently = true }))
            run(ddl.drop_index("ix_doc_at", o))
            run(ddl.drop_index("ix_doc_at", { schema = s, if_exists = true }))
            assert.are.equal(3, #indexes("doc", s))
        end)

        it("adds unique, check, foreign key and primary key constraints with their actions", function()
            local s = new_schema()
            local o = { schema = s }
            run(ddl.create_table("parent", { { name = "a", type = "int", nullable = false },
                                             { name = "b", type = "int", nullable = false } }, o))
            run(ddl.create_table("child", { { name = "id", type = "int", nullable = false },
                { name = "pa", type = "int" }, { name = "pb", type = "int", server_default = 0 } }, o))
            run(ddl.create_primary_key(nil, "parent", { "a", "b" }, o))
            run(ddl.create_primary_key("child_key", "child", { "id" }, o))
            run(ddl.create_unique_constraint(nil, "child", { "pa", "pb" }, o))
            run(ddl.create_check_constraint(nil, "child", "pa > 0", { schema = s, column_hint = "pa", not_valid = true }))
            run(ddl.create_foreign_key(nil, "child", "parent", { "pa", "pb" }, { "a", "b" },
                { schema = s, referent_schema = s, ondelete = "set null", onupdate = "cascade" }))
            run(ddl.create_foreign_key("fk_restrict", "child", "parent", { "pa", "pb" }, { "a", "b" },
                { schema = s, referent_schema = s, ondelete = "RESTRICT", onupdate = "set default", deferrable = true,
                  initially = "deferred" }))
            assert.are.same({
                { "child_key", "p", "PRIMARY KEY (id)" },
                { "ck_child_pa", "c", "CHECK ((pa > 0)) NOT VALID" },
                { "fk_child_pa_parent", "f",
                  ("FOREIGN KEY (pa, pb) REFERENCES %s.parent(a, b) ON UPDATE CASCADE ON DELETE SET NULL"):format(s) },
                { "fk_restrict", "f", ("FOREIGN KEY (pa, pb) REFERENCES %s.parent(a, b) ON UPDATE SET DEFAULT"
                  .. " ON DELETE RESTRICT DEFERRABLE INITIALLY DEFERRED"):format(s) },
                { "uq_child_pa_pb", "u", "UNIQUE (pa, pb)" },
            }, constraints("child", s))
            local acts = assert(db:exec([[SELECT confupdtype, confdeltype FROM pg_constraint
                WHERE conname = 'fk_child_pa_parent' AND connamespace = $1::regnamespace]], s))[1]
            assert.are.same({ confupdtype = "c", confdeltype = "n" }, acts)
            run(ddl.drop_constraint("fk_restrict", "child", o))
            run(ddl.drop_constraint("fk_restrict", "child", { schema = s, if_exists = true }))
            run(ddl.drop_constraint("pk_parent", "parent", { schema = s, cascade = true }))
            assert.are.same({ "child_key", "ck_child_pa", "uq_child_pa_pb" }, (function()
                local names = {}
                for i, c in ipairs(constraints("child", s)) do names[i] = c[1] end
                return names
            end)())
        end)

        it("takes a type of the author's own as ddl.sql()", function()
            local s = new_schema()
            local mood = ddl.quote_ident(s) .. ".mood"
            run(ddl.execute("CREATE TYPE " .. mood .. " AS ENUM ('sad', 'happy')"))
            local stmts = ddl.create_table("feel", { { name = "m", type = ddl.sql(mood), server_default = "happy" } },
                { schema = s })
            assert.are.same({ ('CREATE TABLE "%s"."feel" (\n    "m" "%s".mood DEFAULT \'happy\'\n)'):format(s, s) }, stmts)
            run(stmts)
            assert.are.same({ { name = "m", type = s .. ".mood", notnull = false, dflt = "'happy'::" .. s .. ".mood" } },
                columns("feel", s))
        end)

        it("runs raw SQL from execute", function()
            local s = new_schema()
            run(ddl.execute(("CREATE TABLE %s.raw (x int)"):format(ddl.quote_ident(s))))
            assert.are.same({ { name = "x", type = "integer", notnull = false } }, columns("raw", s))
        end)

        it("takes hostile identifiers as names and runs nothing else", function()
            local s = new_schema()
            local sentinel = "x_" .. kronos.uuid():sub(1, 8)
            run({ "CREATE TABLE public." .. sentinel .. " (id int)" })
            local hostile = {
                'users"; DROP TABLE ' .. sentinel .. '; --',
                'a"b', '"', '""', "with space", "semi;colon", "Ünïcødé 表 🚀", "--", "'quoted'",
                "back\\slash", ("n"):rep(63), "UPPER", "select",
            }
            for _, name in ipairs(hostile) do
                local col = name:sub(1, 60) .. "_c"
                run(ddl.create_table(name, {
                    { name = "id", type = "int", primary_key = true },
                    { name = col, type = "text", unique = true, index = true, check = ddl.sql("true") },
                }, { schema = s }))
                run(ddl.create_index(name:sub(1, 60) .. "_ix", name, { col }, { schema = s }))
                run(ddl.add_column(name, { name = col .. "2", type = "int", server_default = 1 }, { schema = s }))
                run(ddl.alter_column(name, col .. "2", { schema = s, new_name = col .. "3" }))
                local cols = columns(name, s)
                assert.are.same({ "id", col, col .. "3" }, { cols[1].name, cols[2].name, cols[3].name })
            end
            local in_schema = assert(db:exec([[SELECT c.relname FROM pg_class c
                WHERE c.relnamespace = $1::regnamespace AND c.relkind = 'r' ORDER BY c.relname COLLATE "C"]], s))
            local got, want = {}, {}
            for i, r in ipairs(in_schema) do got[i] = r.relname end
            for i, name in ipairs(hostile) do want[i] = name end
            table.sort(want)
            assert.are.same(want, got)
            assert.are.equal(1, #db:exec("SELECT 1 FROM pg_class WHERE relname = $1", sentinel))
            -- the schema itself may be hostile too
            local evil = 's"; DROP TABLE ' .. sentinel .. '; --'
            run({ "CREATE SCHEMA " .. ddl.quote_ident(evil) })
            run(ddl.create_table("t", { { name = "id", type = "int" } }, { schema = evil }))
            run(ddl.drop_table("t", { schema = evil }))
            assert.are.equal(1, #db:exec("SELECT 1 FROM pg_class WHERE relname = $1", sentinel))
            run({ "DROP TABLE public." .. sentinel })
        end)

        it("keeps generated names within 63 bytes, distinct and as the server stores them", function()
            local s = new_schema()
            local long = ("L"):rep(63)
            run(ddl.create_table(long, {
                { name = "id", type = "int", primary_key = true },
                { name = ("a"):rep(63), type = "int", index = true, unique = false },
                { name = ("a"):rep(62) .. "b", type = "int", index = true },
                { name = "u1", type = "int", unique = true }, { name = "u2", type = "int", unique = true },
            }, { schema = s }))
            local want = {
                ddl.name("ix", long, nil, ("a"):rep(63)), ddl.name("ix", long, nil, ("a"):rep(62) .. "b"),
                ddl.name("pk", long), ddl.name("uq", long, nil, "u1"), ddl.name("uq", long, nil, "u2"),
            }
            table.sort(want)
            local got = {}
            for i, idx in ipairs(indexes(long, s)) do
                got[i] = idx[1]
                assert.is_true(#idx[1] <= 63)
            end
            assert.are.same(want, got)
            assert.are.equal(5, #got)
        end)

        it("stores hostile literal defaults as data", function()
            local s = new_schema()
            local values = {
                "'); DROP TABLE x; --", "it's", "''", "back\\slash", "\\'", "E'\\x41'", "new\nline\ttab",
                "Ünïcødé 表 🚀", "$$dollar$$", "", "   ", "--", "/* c */", "%s %d",
            }
            local cols = { { name = "id", type = "int" } }
            for i, v in ipairs(values) do cols[#cols + 1] = { name = "c" .. i, type = "text", server_default = v } end
            cols[#cols + 1] = { name = "n1", type = "double", server_default = 0.1 }
            cols[#cols + 1] = { name = "n2", type = "bigint", server_default = -9007199254740991 }
            cols[#cols + 1] = { name = "n3", type = "double", server_default = 1e300 }
            cols[#cols + 1] = { name = "b", type = "boolean", server_default = false }
            cols[#cols + 1] = { name = "z", type = "text", server_default = kronos.null }
            run(ddl.create_table("lit", cols, { schema = s }))
            local q = ddl.quote_ident(s) .. ".lit"
            run({ "INSERT INTO " .. q .. " (id) VALUES (1)" })
            local row = assert(db:exec("SELECT * FROM " .. q))[1]
            for i, v in ipairs(values) do assert.are.equal(v, row["c" .. i], "c" .. i) end
            assert.are.equal(0.1, row.n1)
            assert.are.equal(1e300, row.n3)
            assert.are.equal(-9007199254740991, tonumber(row.n2))
            assert.are.equal(false, row.b)
            assert.is_nil(row.z)
            -- with standard_conforming_strings off, E'' strings still mean the same
            assert(db:exec("SET standard_conforming_strings = off"))
            local ok, err = pcall(function()
                run(ddl.alter_column("lit", "c4", { schema = s, server_default = "a\\b'c" }))
                run({ "INSERT INTO " .. q .. " (id) VALUES (2)" })
            end)
            assert(db:exec("SET standard_conforming_strings = on"))
            assert(ok, err)
            assert.are.equal("a\\b'c", db:exec("SELECT c4 FROM " .. q .. " WHERE id = 2")[1].c4)
        end)
    end)

    describe("refuses", function()
        local cases = {
            { "a type with SQL in it", function() ddl.create_table("t", { { name = "a", type = "int; DROP TABLE x" } }) end,
              "#2.*columns%[1%]%.type: unknown type" },
            { "an unknown type", function() ddl.create_table("t", { { name = "a", type = "money" } }) end,
              "columns%[1%]%.type: unknown type \"money\"" },
            { "a varchar length out of range", function() ddl.parse_type("string(0)") end,
              "#1.*type: type modifier out of range" },
            { "a numeric scale above its precision", function() ddl.parse_type("numeric(2,3)") end, "out of range" },
            { "an array of serial", function() ddl.parse_type("serial[]") end, "unknown type" },
            { "a type that is no string", function() ddl.add_column("t", { name = "a", type = 5 }) end,
              "#2.*column%.type: type name %(string%) or ddl.sql%(%) expected, got number" },
            { "a missing type", function() ddl.add_column("t", { name = "a" }) end, "#2.*column%.type: required" },
            { "a missing column name", function() ddl.add_column("t", { type = "int" }) end, "column%.name: required" },
            { "a misspelt column key", function() ddl.create_table("t", { { name = "a", type = "int", nulable = false } }) end,
              "columns%[1%]: unknown key \"nulable\"" },
            { "a misspelt option", function() ddl.drop_table("t", { if_exist = true }) end,
              "#2.*opts: unknown key \"if_exist\"" },
            { "an option of the wrong type", function() ddl.drop_table("t", { cascade = "yes" }) end,
              "opts%.cascade: boolean expected, got string" },
            { "a non-table opts", function() ddl.drop_table("t", "cascade") end, "opts: table expected, got string" },
            { "an empty name", function() ddl.drop_table("") end, "#1.*name: must not be empty" },
            { "a name of 64 bytes", function() ddl.drop_table(("x"):rep(64)) end, "name: longer than 63 bytes" },
            { "a name with a NUL", function() ddl.drop_table("a\0b") end, "name: must not contain a NUL byte" },
            { "a name of invalid UTF-8", function() ddl.drop_table("a\255") end, "name: not valid UTF%-8" },
            { "a name that is no string", function() ddl.drop_table(42) end, "name: name %(string%) expected, got number" },
            { "a hostile schema of 64 bytes", function() ddl.drop_table("t", { schema = ("s"):rep(64) }) end,
              "#2.*opts%.schema: longer than 63 bytes" },
            { "empty columns", function() ddl.create_table("t", {}) end, "#2.*columns: must not be empty" },
            { "columns with holes", function() ddl.create_table("t", { [2] = { name = "a", type = "int" } }) end, "columns: " },
            { "a nullable primary key", function()
                ddl.create_table("t", { { name = "a", type = "int", primary_key = true, nullable = true } }) end,
              "columns%[1%]%.nullable: a primary key column cannot be nullable" },
            { "two primary keys", function()
                ddl.create_table("t", { { name = "a", type = "int", primary_key = true } },
                    { constraints = { { kind = "primary_key", columns = { "a" } } } }) end,
              "#3.*opts%.constraints%[1%]: the columns already declare a primary key" },
            { "an unknown constraint kind", function()
                ddl.create_table("t", { { name = "a", type = "int" } }, { constraints = { { kind = "exclude" } } }) end,
              "opts%.constraints%[1%]%.kind: expected primary_key" },
            { "a check constraint without a name", function()
                ddl.create_table("t", { { name = "a", type = "int" } },
                    { constraints = { { kind = "check", condition = "a > 0" } } }) end,
              "opts%.constraints%[1%]%.name: required" },
            { "a foreign key option on a unique constraint", function()
                ddl.create_table("t", { { name = "a", type = "int" } },
                    { constraints = { { kind = "unique", columns = { "a" }, ondelete = "cascade" } } }) end,
              "opts%.constraints%[1%]%.ondelete: not allowed for a unique constraint" },
            { "a bad column name in a table constraint", function()
                ddl.create_table("t", { { name = "a", type = "int" } },
                    { constraints = { { kind = "unique", columns = { "a", "b\255" } } } }) end,
              "#3.*opts%.constraints%[1%]%.columns%[2%]: not valid UTF%-8" },
            { "a bad column name in a foreign key", function()
                ddl.create_foreign_key(nil, "t", "r", { ("a"):rep(64) }, { "b" }) end,
              "#4.*local_cols%[1%]: longer than 63 bytes" },
            { "a literal with a NUL", function() ddl.add_column("t", { name = "a", type = "text", server_default = "a\0b" }) end,
              "column%.server_default: string must not contain a NUL byte" },
            { "a literal of invalid UTF-8", function() ddl.quote_literal("\192\128") end, "value: string not valid UTF%-8" },
            { "a non-finite number", function() ddl.quote_literal(math.huge) end, "value: number must be finite" },
            { "a table as a literal", function() ddl.quote_literal({}) end, "value: literal" },
            { "raw SQL with a NUL", function() ddl.sql("now()\0; DROP TABLE x") end,
              "#1.*text: SQL text must not contain a NUL" },
            { "empty raw SQL", function() ddl.execute("  ") end, "sql: SQL text must not be empty" },
            { "a check condition that is no SQL text", function() ddl.create_check_constraint("c", "t", 5) end,
              "#3.*condition: SQL text" },
            { "a check constraint without name or hint", function() ddl.create_check_constraint(nil, "t", "a > 0") end,
              "#1.*name: required for a check constraint" },
            { "an unknown foreign key action", function()
                ddl.create_foreign_key(nil, "t", "r", { "a" }, { "b" }, { ondelete = "CASCADE; DROP TABLE x" }) end,
              "#6.*opts%.ondelete: expected CASCADE, SET NULL, SET DEFAULT, RESTRICT or NO ACTION" },
            { "mismatched foreign key columns", function() ddl.create_foreign_key(nil, "t", "r", { "a", "b" }, { "c" }) end,
              "#5.*remote_cols: 1 column" },
            { "initially deferred without deferrable", function()
                ddl.create_foreign_key(nil, "t", "r", { "a" }, { "b" }, { initially = "deferred" }) end,
              "opts%.initially: \"deferred\" needs deferrable = true" },
            { "an expression index without a name", function() ddl.create_index(nil, "t", { ddl.sql("lower(a)") }) end,
              "#1.*name: required when the index has an expression" },
            { "an index method with SQL in it", function() ddl.create_index(nil, "t", { "a" }, { using = "btree (a); --" }) end,
              "#4.*opts%.using: index method name" },
            { "an unknown key in an index column", function() ddl.create_index(nil, "t", { { "a", descending = true } }) end,
              "#3.*columns%[1%]: unknown key \"descending\"" },
            { "bad nulls ordering", function() ddl.create_index(nil, "t", { { "a", nulls = "middle" } }) end,
              "columns%[1%]%.nulls: expected \"first\" or \"last\"" },
            { "a concurrent cascading index drop", function() ddl.drop_index("i", { concurrently = true, cascade = true }) end,
              "#2.*opts%.cascade" },
            { "alter_column with nothing to alter", function() ddl.alter_column("t", "c", {}) end, "#3.*opts: nothing to alter" },
            { "alter_column without opts", function() ddl.alter_column("t", "c") end, "#3.*opts: required" },
            { "using without a type", function() ddl.alter_column("t", "c", { using = "c::int" }) end,
              "opts%.using: only with opts%.type" },
        }
        for _, case in ipairs(cases) do
            it(case[1], function()
                local msg = raises(case[2])
                assert.matches("bad argument", msg, 1, true)
                assert.matches(case[3], msg)
            end)
        end
    end)
end)
