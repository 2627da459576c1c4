-- Secrets and transport: a password given in a URI, a conninfo string, a table or PGPASSWORD
-- never shows in an error, tostring(conn), a migration log line or the CLI's output; libpq's
-- transport options (sslmode, sslrootcert, ...) pass through unchanged.
local kronos = require "kronos"
local migrate = require "kronos.migrate"
local H = require "spec.helper"

local port = assert(H.base_url:match(":(%d+)/"), "the harness serves on a TCP port")
-- Unique to this run, so a hit can only be a leak, never a coincidence.
local secret = "Sx9-" .. kronos.uuid():sub(1, 8) .. "-pw"
local wrong = "Wr0ng-" .. kronos.uuid():sub(1, 8)

local shell_quote = H.shell_quote

-- Runs the CLI from the checkout with the given environment prefix; returns code, output.
local function cli(env, args)
    return H.run(("cd %s && %s %s bin/kronos %s"):format(shell_quote(H.root), env or "", H.lua, args))
end

local function refute_secret(text, ...)
    text = tostring(text)
    for _, s in ipairs({ ... }) do
        assert.is_nil(text:find(s, 1, true), ("%q leaked into: %s"):format(s, text))
    end
end

local function connection_error(c, err)
    assert.is_nil(c)
    assert.is_true(kronos.is_error(err))
    assert.are.equal("connection", err.code)
    return err
end

describe("secrets", function()
    local dbname

    setup(function()
        dbname = select(2, H.fresh_db("secrets"))
        local admin = assert(kronos.connect(H.base_url))
        assert(admin:exec([[DO $$ BEGIN CREATE ROLE kronos_pw LOGIN;
            EXCEPTION WHEN duplicate_object THEN NULL; END $$]]))
        assert(admin:exec("ALTER ROLE kronos_pw PASSWORD " .. admin:escape_literal(secret)))
        assert(admin:exec(("ALTER DATABASE %s OWNER TO kronos_pw"):format(admin:escape_identifier(dbname))))
        admin:close()
    end)

    teardown(function()
        H.drop_db(dbname)
    end)

    local function pw_uri(pw)
        return ("postgresql://kronos_pw:%s@127.0.0.1:%s/%s"):format(pw, port, dbname)
    end
    local function pw_conninfo(pw)
        return ("host=127.0.0.1 port=%s user=kronos_pw dbname=%s password=%s"):format(port, dbname, pw)
    end
    -- The four ways kronos.connect takes a password.
    local function pw_forms(pw)
        return {
            pw_uri(pw),
            pw_conninfo(pw),
            { url = pw_uri(pw) },
            { host = "127.0.0.1", port = port, user = "kronos_pw", dbname = dbname, password = pw },
        }
    end

    describe("a wrong password", function()
        it("is not in the error, whichever way it was given", function()
            for _, form in ipairs(pw_forms(wrong)) do
                local err = connection_error(kronos.connect(form))
                assert.matches("password authentication failed", err.message)
                refute_secret(err.message, wrong)
                refute_secret(tostring(err), wrong)
            end
        end)

        it("from PGPASSWORD is not in the CLI's output, and the CLI exits 1", function()
            local code, out = cli("PGPASSWORD=" .. shell_quote(wrong),
                "current -d " .. shell_quote(("postgresql://kronos_pw@127.0.0.1:%s/%s"):format(port, dbname)))
            assert.are.equal(1, code, out)
            assert.matches("password authentication failed", out)
            refute_secret(out, wrong)
        end)

        it("in a URI or conninfo is not in the CLI's output", function()
            for _, u in ipairs({ pw_uri(wrong), pw_conninfo(wrong) }) do
                local code, out = cli(nil, "current -d " .. shell_quote(u))
                assert.are.equal(1, code, out)
                assert.matches("password authentication failed", out)
                refute_secret(out, wrong)
            end
        end)
    end)

    describe("the right password", function()
        it("connects in every form, and tostring(conn) does not show it", function()
            for _, form in ipairs(pw_forms(secret)) do
                local c = assert(kronos.connect(form))
                assert.are.equal("kronos_pw", c:exec("SELECT current_user AS u")[1].u)
                refute_secret(tostring(c), secret)
                c:close()
            end
        end)

        it("from PGPASSWORD connects; a later reset that fails does not show it", function()
            local code, out = cli("PGPASSWORD=" .. shell_quote(secret),
                "current -d " .. shell_quote(("postgresql://kronos_pw@127.0.0.1:%s/%s"):format(port, dbname)))
            assert.are.equal(0, code, out)
            refute_secret(out, secret)

            local c = assert(kronos.connect(pw_uri(secret)))
            local admin = assert(kronos.connect(H.base_url))
            -- the password changes under the session: reset must fail, and quietly
            assert(admin:exec("ALTER ROLE kronos_pw PASSWORD " .. admin:escape_literal(wrong)))
            assert(admin:exec("SELECT pg_terminate_backend($1)", c:backend_pid()))
            local ok, err = c:reset()
            assert(admin:exec("ALTER ROLE kronos_pw PASSWORD " .. admin:escape_literal(secret)))
            admin:close()
            assert.is_nil(ok)
            assert.are.equal("connection", err.code)
            assert.matches("password authentication failed", err.message)
            refute_secret(tostring(err), secret, wrong)
            c:close()
        end)

        it("is not in the migration log lines nor the CLI's upgrade output", function()
            local dir = os.tmpname()
            os.remove(dir)
            assert(os.execute("mkdir -p " .. shell_quote(dir)))
            local f = assert(io.open(dir .. "/a1_secret_probe.lua", "w"))
            f:write([[return { revision = "a1", message = "probe", up = function(op)
                op.create_table("probe", {{ name = "id", type = "integer" }}) end,
                down = function(op) op.drop_table("probe") end }]])
            f:close()
            local lines = {}
            local applied = migrate.upgrade({ url = pw_uri(secret), dir = dir,
                log = function(line) lines[#lines + 1] = line end })
            assert.are.same({ "a1" }, applied)
            assert.is_true(#lines > 0)
            for _, line in ipairs(lines) do refute_secret(line, secret) end
            local code, out = cli(nil, ("downgrade base --dir %s -d %s"):format(shell_quote(dir), shell_quote(pw_uri(secret))))
            assert.are.equal(0, code, out)
            assert.matches("a1", out)
            refute_secret(out, secret)
            code, out = cli(nil, ("upgrade --dir %s -d %s"):format(shell_quote(dir), shell_quote(pw_conninfo(secret))))
            assert.are.equal(0, code, out)
            refute_secret(out, secret)
            os.execute("rm -rf " .. shell_quote(dir))
        end)
    end)

    describe("an unreachable host or a malformed string", function()
        it("never shows the password", function()
            -- a port nobody listens on (the server's own port number plus one is not ours)
            local dead = ("postgresql://kronos_pw:%s@127.0.0.1:1/%s?connect_timeout=2"):format(secret, dbname)
            local err = connection_error(kronos.connect(dead))
            assert.matches("127.0.0.1", err.message)
            refute_secret(err.message, secret)
            local code, out = cli(nil, "current -d " .. shell_quote(dead))
            assert.are.equal(1, code, out)
            refute_secret(out, secret)
            local malformed = {
                ("postgresql://kronos_pw:%s%%zz@127.0.0.1:%s/x"):format(secret, port),   -- bad percent-escape
                ("postgresql://kronos_pw:%s@[::1/x"):format(secret),                     -- unterminated IPv6
                ("host=127.0.0.1 password='%s"):format(secret),                          -- unterminated quote
                ("host=127.0.0.1 password=%s bogus"):format(secret),                     -- missing '='
                ("host=127.0.0.1 password=%s nokeyword=1"):format(secret),               -- unknown keyword
                ("postgresql:///x?password=%s&bogus=1"):format(secret),                  -- unknown parameter
            }
            for _, s in ipairs(malformed) do
                local e = connection_error(kronos.connect(s))
                refute_secret(e.message, secret)
                code, out = cli(nil, "current -d " .. shell_quote(s))
                assert.are.equal(1, code, out)
                refute_secret(out, secret)
            end
        end)

        it("never shows any part of a password that libpq misreads as another field", function()
            -- A '/' in an unencoded URI password ends libpq's authority: "pre" becomes a port
            -- and "post@host/db" the path. Neither half of the password may appear.
            local pre, post = "Pre" .. kronos.uuid():sub(1, 6), "Post" .. kronos.uuid():sub(1, 6)
            local err = connection_error(kronos.connect(("postgresql://kronos_pw:%s/%s@127.0.0.1:%s/x"):format(pre, post, port)))
            refute_secret(err.message, pre, post)
            -- An unquoted space in a keyword password: libpq reads the rest as a keyword.
            err = connection_error(kronos.connect(("host=127.0.0.1 password=%s %s"):format(pre, post)))
            refute_secret(err.message, pre, post)
        end)
    end)

    describe("transport options", function()
        it("pass through to libpq: sslmode=require fails with libpq's own message", function()
            -- the test server has no TLS: libpq refuses, in its own words
            local err = connection_error(kronos.connect(H.base_url .. "?sslmode=require"))
            assert.matches("SSL", err.message)
            assert.matches("server does not support SSL, but SSL was required", err.message)
            err = connection_error(kronos.connect({ url = H.base_url, sslmode = "verify-full",
                sslrootcert = "/nonexistent/kronos-root.crt" }))
            assert.matches("SSL was required", err.message)
            err = connection_error(kronos.connect(H.base_url .. "?sslmode=bogus"))
            assert.matches('invalid sslmode value: "bogus"', err.message, 1, true)
            -- sslrootcert is a keyword libpq knows (unused without TLS): accepted, not refused
            local plain = { url = H.base_url, sslmode = "disable", sslrootcert = "/nonexistent/kronos-root.crt" }
            assert(kronos.connect(plain)):close()
            local c = assert(kronos.connect(H.base_url .. "?sslmode=disable&application_name=kronos-secrets"))
            local row = c:exec([[SELECT current_setting('application_name') AS app, ssl
                FROM pg_stat_ssl WHERE pid = pg_backend_pid()]])[1]
            assert.are.same({ app = "kronos-secrets", ssl = false }, row)
            c:close()
        end)

        it("pass through in a conninfo string and a table", function()
            local err = connection_error(kronos.connect(("host=127.0.0.1 port=%s dbname=postgres sslmode=require"):format(port)))
            assert.matches("SSL", err.message)
            local c = assert(kronos.connect({ url = H.base_url, sslmode = "prefer", options = "-c search_path=pg_catalog" }))
            assert.are.equal("pg_catalog", c:exec("SHOW search_path")[1].search_path)
            c:close()
        end)
    end)
end)
