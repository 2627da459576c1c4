-- kronos: `luarocks make --tree DIR kronos-scm-1.rockspec` builds and installs it offline
-- (libpq and libuuid from the system: Debian's libpq-dev and uuid-dev).
rockspec_format = "3.0"
package = "kronos"
version = "scm-1"
source = {
   url = "git+file:///work/main", -- `luarocks make` builds the checkout it runs in
}
description = {
   summary = "PostgreSQL for Lua over libpq, with schema migrations and the Kronos user model",
   detailed = [[
kronos is a Lua module written in C that wraps libpq: exact type conversion, parameters always
sent as parameters, streaming results, transactions with savepoints. It carries a schema-migration
engine (Lua migration files over C-backed DDL helpers, the `kronos` command) and the Kronos user
model. One C source builds for Lua 5.4 and LuaJIT 2.1 (OpenResty).
]],
   license = "MIT",
}
dependencies = {
   "lua >= 5.1",
}
external_dependencies = {
   PQ = { library = "pq" },
   UUID = { header = "uuid/uuid.h", library = "uuid" },
}
build = {
   type = "builtin",
   modules = {
      ["kronos.core"] = {
         -- every src/*.c (the Makefile takes them by wildcard; keep this list in step)
         sources = {
            "src/auxiliar.c", "src/error.c", "src/conn.c", "src/convert.c", "src/kronos.c", "src/params.c",
            "src/result.c", "src/uuid.c",
            "src/ddl.c", "src/ddl_constraint.c", "src/ddl_table.c", "src/ddl_text.c", "src/ddl_util.c",
            "src/migrate.c", "src/migrate_files.c", "src/migrate_graph.c", "src/migrate_op.c", "src/migrate_plan.c",
            "src/migrate_run.c", "src/migrate_sql.c", "src/migrate_status.c", "src/sha256.c",
            "src/users.c", "src/users_base.c", "src/users_batch.c", "src/users_fields.c", "src/users_list.c", "src/utf8.c", "src/validate.c",
            "src/prepared.c", "src/option.c", "src/notify.c", "src/statement.c", "src/copy.c", "src/pipeline.c", "src/array.c",
         },
         defines = { "_POSIX_C_SOURCE=200809L" },
         -- Debian keeps libpq-fe.h in include/postgresql, other systems in include/
         incdirs = { "src", "$(PQ_INCDIR)", "$(PQ_INCDIR)/postgresql", "$(UUID_INCDIR)" },
         libdirs = { "$(PQ_LIBDIR)", "$(UUID_LIBDIR)" },
         libraries = { "pq", "uuid" },
      },
      ["kronos"] = "lua/kronos/init.lua",
      ["kronos.cli"] = "lua/kronos/cli.lua",
      ["kronos.console"] = "lua/kronos/console.lua",
      ["kronos.migrate"] = "lua/kronos/migrate.lua",
      ["kronos.users"] = "lua/kronos/users.lua",
   },
   install = {
      bin = { kronos = "bin/kronos" },
   },
}
