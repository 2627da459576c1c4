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

    local function columns(tbl, schema)
        return assert(db:exec([[
            SELECT a.attname AS name, format_type(a.atttypid, a.atttypmod) AS type,
                   a.attnotnull AS notnull, pg_get_expr(d.adbin, d.adrelid) AS dflt
            FROM pg_attribute a
            JOIN pg_class c ON c.oid = a.attrelid
            JOIN pg_namespace n ON n.oid = c.relnamespace
            LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
            WHERE c.relname = $1 AND n.nspname = $2 AND a.attnum > 0 AND NOT a.attisdropped
            ORDER BY a.attnum]], tbl, schema or "public"))
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

    local function tables()
        local rows = assert(db:exec([[
            SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
            ORDER BY c.relname COLLATE "C"]]))
        local out = {}
        for _, r in ipairs(rows) do out[#out + 1] = r.relname end
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
                'ALTER TABLE "t" ALTER COLUMN "c" TYPE bigint USING c::bigint, ALTER COLUMN "c" SET DEFAULT 7,'
                    .. ' ALTER COLUMN "c" SET NOT NULL',
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
            assert.are.same({ 'CREATE UNIQUE INDEX "ix_t_a" ON "t" ("a")' }, ddl.create_index(nil, "t", { "a" }, { unique = true }))
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
end)
