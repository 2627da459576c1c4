-- The DDL safety check (kronos lint, migrate.lint{}): every rule with a migration that triggers
-- it and one that passes; the passing one is then applied to a real server (with rows in the
-- tables) to show the safe way works. Escape hatches, the CLI, upgrade's warnings and refusal.
local H = require "spec.helper"
local migrate = require "kronos.migrate"

-- 001 creates the tables every case works on, with rows: they exist before the case's migration.
local BASE = [[
return {
    revision = "base01", message = "tables",
    up = function(op)
        op.create_table("p", { { name = "id", type = "integer", primary_key = true } })
        op.create_table("t", {
            { name = "id", type = "integer", primary_key = true },
            { name = "n", type = "integer" },
            { name = "s", type = "text" },
        })
        op.create_index("ix_t_n", "t", { "n" })
        op.execute("INSERT INTO p VALUES (1); INSERT INTO t VALUES (1, 1, 'a'), (2, 1, 'b')")
    end,
    down = function(op) op.drop_table("t") op.drop_table("p") end,
}
]]

local function case_file(body, extra)
    return ([[
return {
    revision = "case02", down_revision = "base01", message = "the case",
    %s
    up = function(op)
        %s
    end,
}
]]):format(extra or "", body)
end

-- rule, the migration that triggers it, the one that passes ({body, extra fields}).
local CASES = {
    { "adding-required-field",
      { 'op.add_column("t", { name = "x", type = "integer", nullable = false })' },
      { 'op.add_column("t", { name = "x", type = "integer", nullable = false, server_default = 0 })' } },
    { "adding-field-with-default",
      { 'op.add_column("t", { name = "x", type = "timestamptz", server_default = op.sql("clock_timestamp()") })' },
      { 'op.add_column("t", { name = "x", type = "timestamptz", server_default = op.sql("now()") })' } },
    { "adding-field-with-default",
      { 'op.add_column("t", { name = "x", type = "bigserial" })' },
      { 'op.add_column("t", { name = "x", type = "bigint" })' } },
    { "changing-column-type",
      { 'op.alter_column("t", "n", { type = "bigint" })' },
      { 'op.add_column("t", { name = "n2", type = "bigint" })' } },
    { "adding-not-nullable-field",
      { 'op.alter_column("t", "n", { nullable = false })' },
      { 'op.create_check_constraint("ck_t_n_nn", "t", "n IS NOT NULL", { not_valid = true })' } },
    { "adding-foreign-key-constraint",
      { 'op.create_foreign_key("fk_t_p", "t", "p", { "n" }, { "id" })' },
      { 'op.create_foreign_key("fk_t_p", "t", "p", { "n" }, { "id" }, { not_valid = true })' } },
    { "constraint-missing-not-valid",
      { 'op.create_check_constraint("ck_t_n", "t", "n > 0")' },
      { 'op.create_check_constraint("ck_t_n", "t", "n > 0", { not_valid = true })' } },
    { "constraint-missing-not-valid",
      { 'op.add_column("t", { name = "x", type = "integer", check = "x > 0" })' },
      { 'op.add_column("t", { name = "x", type = "integer" })' } },
    { "require-concurrent-index-creation",
      { 'op.create_index("ix_t_s", "t", { "s" })' },
      { 'op.create_index("ix_t_s", "t", { "s" }, { concurrently = true })', "transactional = false," } },
    { "require-concurrent-index-creation",
      { 'op.add_column("t", { name = "x", type = "integer", unique = true })' },
      { 'op.create_table("u", { { name = "x", type = "integer", unique = true } }) op.create_index("ix_u_x2", "u", { "x" })' } },
    { "require-concurrent-index-deletion",
      { 'op.drop_index("ix_t_n")' },
      { 'op.drop_index("ix_t_n", { concurrently = true })', "transactional = false," } },
    { "disallowed-unique-constraint",
      { 'op.create_unique_constraint("uq_t_s", "t", { "s" })' },
      { 'op.create_index("uq_t_s", "t", { "s" }, { unique = true, concurrently = true })', "transactional = false," } },
    { "renaming-column",
      { 'op.alter_column("t", "s", { new_name = "s2" })' },
      { '', 'finish = function(op) op.alter_column("t", "s", { new_name = "s2" }) end,' } },
    { "renaming-table",
      { 'op.rename_table("t", "t2")' },
      { 'op.create_table("v", { { name = "a", type = "integer" } }) op.rename_table("v", "v2") '
        .. 'op.create_index("ix_v2", "v2", { "a" })' } },
    { "ban-drop-column",
      { 'op.drop_column("t", "s")' },
      { '', 'finish = function(op) op.drop_column("t", "s") end,' } },
    { "ban-drop-table",
      { 'op.drop_table("p")' },
      { '', 'finish = function(op) op.drop_table("p") end,' } },
    { "ban-concurrent-index-creation-in-transaction",
      { 'op.create_index("ix_t_s", "t", { "s" }, { concurrently = true })' },
      { 'op.create_index("ix_t_s", "t", { "s" }, { concurrently = true })', "transactional = false," } },
    { "migration-error",
      { 'op.add_column("t", { name = "x", type = "integr" })' },
      { 'op.add_column("t", { name = "x", type = "integer" })' } },
    { "unknown-rule",
      { 'op.drop_column("t", "s")', 'safe = { "ban-drop-collumn" },' },
      { 'op.drop_column("t", "s")', 'safe = { "ban-drop-column" },' } },
}

describe("DDL safety check", function()
    local url, dbname, db, dir
    setup(function() url, dbname, db, dir = H.scratch("lint") end)
    teardown(function() H.drop_scratch(dbname, db, dir) end)

    local function write(case_text)
        H.sh("rm -f " .. H.shell_quote(dir) .. "/*.lua")
        H.write_file(dir .. "/001_base.lua", BASE)
        H.write_file(dir .. "/002_case.lua", case_text)
    end

    -- the findings of the case's file (001's op.execute is a note of its own)
    local function of_case(found)
        local out = {}
        for _, f in ipairs(found) do
            if f.file:match("002_case%.lua$") then out[#out + 1] = f end
        end
        return out
    end

    local function blocking_rules(found)
        local rules = {}
        for _, f in ipairs(found) do
            if f.level == "finding" and not f.allowed then rules[#rules + 1] = f.rule end
        end
        return rules
    end

    local function reset()
        assert(db:script("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    end

    for i, case in ipairs(CASES) do
        local rule, trigger, pass = case[1], case[2], case[3]
        it(("%s (%d): triggered, then passed and applied"):format(rule, i), function()
            write(case_file(trigger[1], trigger[2]))
            local found, blocking = migrate.lint { dir = dir }
            local expect = rule == "unknown-rule" and { rule, "ban-drop-column" } or { rule }
            assert.same(expect, blocking_rules(found))
            assert.equal(#expect, blocking)
            local f
            for _, x in ipairs(found) do if x.rule == rule then f = x end end
            assert.equal(dir .. "/002_case.lua", f.file)
            -- the line of the call in case_file's layout (of up for the migration's own fields)
            assert.equal(rule == "unknown-rule" and 4 or 5, f.line)
            assert.equal("case02", f.revision)
            assert.matches(rule, f.text, 1, true)
            assert.truthy(#f.why > 20 and #f.fix > 10)

            write(case_file(pass[1], pass[2]))
            found, blocking = migrate.lint { dir = dir }
            assert.same({}, blocking_rules(found))
            assert.equal(0, blocking)
            reset()
            assert.same({ "base01", "case02" }, migrate.upgrade { db = db, dir = dir })
        end)
    end

    it("the first rule's why is real: NOT NULL without a default fails on a table with rows", function()
        reset()
        write(case_file('op.add_column("t", { name = "x", type = "integer", nullable = false })'))
        local ok, err = pcall(migrate.upgrade, { db = db, dir = dir })
        assert.is_false(ok)
        assert.equal("not_null_violation", err.code)
    end)

    it("tables and indexes this migration created are exempt", function()
        write(case_file([[op.create_table("n", { { name = "a", type = "integer" } })
        op.create_index("ix_n_a", "n", { "a" })
        op.add_column("n", { name = "b", type = "integer", nullable = false })
        op.alter_column("n", "a", { type = "bigint", nullable = false })
        op.create_check_constraint("ck_n_a", "n", "a > 0")
        op.drop_index("ix_n_a")
        op.drop_column("n", "b")]]))
        local found, blocking = migrate.lint { dir = dir }
        assert.equal(0, blocking, found[1] and found[1].text)
    end)

    it("raw SQL is a note, not a finding, and never parsed", function()
        write(case_file('op.execute("ALTER TABLE t ALTER COLUMN n TYPE bigint")'))
        local found, blocking = migrate.lint { dir = dir }
        found = of_case(found)
        assert.equal(0, blocking)
        assert.equal(1, #found)
        assert.equal("unchecked-sql", found[1].rule)
        assert.equal("note", found[1].level)
        assert.matches('op.execute("ALTER TABLE t ALTER COLUMN n TYPE bigint")', found[1].text, 1, true)
    end)

    it("safe = true on a call, safe = true or a list on the migration: allowed, not dropped", function()
        write(case_file('op.create_index("ix_t_s", "t", { "s" }, { safe = true }) op.drop_column("t", "s")'))
        local found, blocking = migrate.lint { dir = dir }
        found = of_case(found)
        assert.equal(1, blocking)
        assert.equal("call", found[1].allowed)
        assert.equal("require-concurrent-index-creation", found[1].rule)
        write(case_file('op.create_index("ix_t_s", "t", { "s" }) op.drop_column("t", "s")', "safe = true,"))
        found, blocking = migrate.lint { dir = dir }
        found = of_case(found)
        assert.equal(0, blocking)
        assert.equal(2, #found)
        assert.equal("migration", found[1].allowed)
        assert.equal("migration", found[2].allowed)
        -- safe never reaches the builder: the migration applies
        write(case_file('op.create_index("ix_t_s", "t", { "s" }, { safe = true })'))
        reset()
        assert.same({ "base01", "case02" }, migrate.upgrade { db = db, dir = dir })
        assert.equal(1, #assert(db:exec("SELECT 1 FROM pg_indexes WHERE indexname = 'ix_t_s'")))
        -- the server's refusal cannot be marked safe
        write(case_file('op.create_index("ix_t_s", "t", { "s" }, { concurrently = true, safe = true })', "safe = true,"))
        found, blocking = migrate.lint { dir = dir }
        found = of_case(found)
        assert.equal(1, blocking)
        assert.equal("ban-concurrent-index-creation-in-transaction", found[1].rule)
    end)

    local function esc(s) return (s:gsub("%p", "%%%0")) end

    local cli = H.kronos

    it("kronos lint: exit 1 with the finding's file:line, rule, why and fix; --verbose shows the allowed", function()
        write(case_file('op.drop_column("t", "s") op.create_index("ix_t_s", "t", { "s" }, { safe = true })'))
        local code, out = cli(("lint --dir %q"):format(dir))
        assert.equal(1, code, out)
        assert.matches(dir .. "/002_case.lua:5: ban-drop-column: drop_column t.s (up): the old code", out, 1, true)
        assert.matches("Instead: stop using it in the new code and drop it in finish", out, 1, true)
        assert.not_matches("require-concurrent-index-creation", out, 1, true)
        assert.matches("1 finding(s), 1 allowed by safe (--verbose lists them)", out, 1, true)
        code, out = cli(("lint --verbose --dir %q"):format(dir))
        assert.equal(1, code)
        assert.matches("require-concurrent-index-creation: create_index ix_t_s on t without concurrently (up)", out, 1, true)
        assert.matches("[allowed by safe = true on the call]", out, 1, true)
        write(case_file('op.add_column("t", { name = "x", type = "integer" })'))
        code, out = cli(("lint --dir %q"):format(dir))
        assert.equal(0, code, out)
        -- notes are listed and do not fail
        assert.matches("^note: " .. esc(dir) .. "/001_base%.lua:11: unchecked%-sql: op%.execute%(\"INSERT INTO p", out)
        assert.matches("\n0 finding%(s%)\n$", out)
    end)

    it("upgrade warns about the migrations it runs, and refuses concurrently in a transaction before anything runs", function()
        reset()
        write(case_file('op.drop_column("t", "s")'))
        local code, out, err = cli(("upgrade -d %q --dir %q"):format(url, dir))
        assert.equal(0, code, out .. err)
        assert.matches("kronos: warning: " .. dir .. "/002_case.lua:5: ban-drop-column", err, 1, true)
        -- applied: no warning any more
        code, out, err = cli(("upgrade -d %q --dir %q"):format(url, dir))
        assert.equal(0, code, out)
        assert.equal("", err)

        reset()
        write(case_file('op.create_index("ix_t_s", "t", { "s" }, { concurrently = true })'))
        code, out, err = cli(("upgrade -d %q --dir %q"):format(url, dir))
        assert.equal(1, code, out)
        assert.matches("^kronos: " .. esc(dir) .. "/002_case%.lua:5: ban%-concurrent%-index%-creation%-in%-transaction: "
            .. ".* Instead: set transactional = false", err)
        -- nothing ran: not even the first migration
        assert.equal(0, #assert(db:exec("SELECT 1 FROM pg_class WHERE relname IN ('t', 'kronos_version')")))
        local ok, e = pcall(migrate.upgrade, { db = db, dir = dir })
        assert.is_false(ok)
        assert.equal("unsafe_migration", e.code)
        assert.equal("case02", e.revision)
        -- the same file with transactional = false goes through
        write(case_file('op.create_index("ix_t_s", "t", { "s" }, { concurrently = true })', "transactional = false,"))
        assert.same({ "base01", "case02" }, migrate.upgrade { db = db, dir = dir })
    end)

    it("revision warns about the findings of the migration it builds on", function()
        write(case_file('op.drop_table("p")'))
        local code, out, err = cli(("revision --dir %q -m next"):format(dir))
        assert.equal(0, code, out .. err)
        assert.matches("created " .. dir .. "/", out, 1, true)
        assert.matches("kronos: warning: " .. dir .. "/002_case.lua:5: ban-drop-table", err, 1, true)
    end)
end)
