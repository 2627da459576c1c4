-- kronos.migrations: the migrations kronos ships, as a module (migrate{modules = {"kronos.migrations"}},
-- `kronos --module kronos.migrations upgrade`), for programs that installed kronos and have no
-- checkout. The users migration is the very file migrations/4f1c2a9e7b30_create_users_table.lua
-- (lua/kronos/migrations/ links to it; the rock installs its bytes under this module's name), so
-- a database migrated from the directory sees the same revision with the same checksum.
return {
    "kronos.migrations.4f1c2a9e7b30_create_users_table",
}
