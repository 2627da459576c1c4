# kronos: Lua module in C over libpq. Every variable below may be overridden: make LUA=luajit CC=clang
LUA      ?= lua5.4
PREFIX   ?= /usr/local
CC       ?= cc
PG_CONFIG ?= pg_config

ifeq ($(LUA),luajit)
  LUA_INC  ?= /usr/include/luajit-2.1
  LUA_VER  ?= 5.1
else
  LUA_INC  ?= /usr/include/$(LUA)
  LUA_VER  ?= $(patsubst lua%,%,$(LUA))
endif
# The kronos command (bin/launcher.c) is compiled to the bytecode of LUA_BIN (the rock passes its
# interpreter) and linked with its static library, as Debian's lua5.4 and luajit are.
LUA_BIN  ?= $(LUA)
ifeq ($(notdir $(LUA_BIN)),luajit)
  LUA_LIB ?= $(shell $(CC) -print-file-name=libluajit-5.1.a)
else
  LUA_LIB ?= $(shell $(CC) -print-file-name=lib$(notdir $(LUA_BIN)).a)
endif

BUILD    ?= build/$(LUA)$(VARIANT)
PQ_INC   := $(shell $(PG_CONFIG) --includedir 2>/dev/null)
PQ_LIB   := $(shell $(PG_CONFIG) --libdir 2>/dev/null)
CFLAGS   ?= -O2 -g
WERROR   ?= -Werror
CFLAGS_ALL := -std=c11 -D_POSIX_C_SOURCE=200809L -fPIC -Wall -Wextra $(WERROR) -I$(LUA_INC) -I$(PQ_INC) $(CFLAGS) $(XCFLAGS)
LDFLAGS_ALL := -shared -L$(PQ_LIB) $(LDFLAGS) $(XLDFLAGS)
LIBS     := -lpq

SRCS     := $(sort $(wildcard src/*.c))
OBJS     := $(patsubst src/%.c,$(BUILD)/obj/%.o,$(SRCS))
MODULE   := $(BUILD)/kronos/core.so
# The kronos command (bin/launcher.c): Lua, libpq and kronos.core linked in, bin/kronos and
# lua/kronos/*.lua carried as bytecode.
COMMAND  := $(BUILD)/bin/kronos
CHUNKS   := bin/kronos $(sort $(wildcard lua/kronos/*.lua))
BUSTED   ?= /usr/bin/busted
BUSTED_ARGS ?= -o utfTerminal
SPECS    ?= spec
# `make install` (and the rock, which passes LuaRocks' directories) puts the module here.
INST_LIBDIR ?= $(PREFIX)/lib/lua/$(LUA_VER)
INST_LUADIR ?= $(PREFIX)/share/lua/$(LUA_VER)
INST_BINDIR ?= $(PREFIX)/bin
# Every Lua module under lua/ (the users migration module included), by wildcard like the C.
LUA_FILES = $(shell cd lua && find . -name '*.lua' | sed 's,^\./,,' | sort)

.PHONY: all deps env test test-all lint check-memory fuzz bench dev dev-env dev-stop clean install FORCE

# Building never installs packages (make deps does; so do make test and make dev).
all: $(MODULE) $(COMMAND)

# The flags the objects were built with: a build for other headers (LUA_INC) or other flags in
# the same BUILD directory recompiles everything instead of linking stale objects.
$(BUILD)/cflags: FORCE
	@mkdir -p $(@D)
	@echo '$(CFLAGS_ALL)' | cmp -s - $@ || echo '$(CFLAGS_ALL)' > $@

$(BUILD)/obj/%.o: src/%.c src/*.h $(BUILD)/cflags
	@mkdir -p $(@D)
	$(CC) $(CFLAGS_ALL) -c $< -o $@

$(MODULE): $(OBJS)
	@mkdir -p $(@D)
	$(CC) -o $@ $(OBJS) $(LDFLAGS_ALL) $(LIBS)

$(BUILD)/bin/chunks.c: tools/embed.lua $(CHUNKS)
	@mkdir -p $(@D)
	$(LUA_BIN) tools/embed.lua $@ $(CHUNKS)

# -Wl,-E: Lua C modules the program loads later (lua-cjson, lua-readline) find Lua's API in it.
$(COMMAND): bin/launcher.c bin/chunks.h $(BUILD)/bin/chunks.c $(OBJS)
	$(CC) $(CFLAGS_ALL) -Ibin -o $@ bin/launcher.c $(BUILD)/bin/chunks.c $(OBJS) -L$(PQ_LIB) $(LDFLAGS) $(XLDFLAGS) \
	  -Wl,-E $(LUA_LIB) $(LIBS) -lm -ldl

# Installs the Debian packages that are missing; a no-op on a ready machine.
deps:
	@sh tools/deps.sh base

# eval "$(make -s env)" puts the in-tree build first on Lua's paths.
env:
	@echo "export LUA_PATH='$(CURDIR)/lua/?.lua;$(CURDIR)/lua/?/init.lua;$(CURDIR)/?.lua;;'"
	@echo "export LUA_CPATH='$(CURDIR)/$(BUILD)/?.so;;'"

# Runs the busted suite against a private PostgreSQL cluster (or $$DATABASE_URL).
# nginx in the OpenResty spec loads the LuaJIT build whatever LUA is, so both are built.
test: deps
	@$(MAKE) --no-print-directory all
	@$(MAKE) -s LUA=luajit VARIANT= all >/dev/null
	@LUA=$(LUA) BUILD=$(BUILD) sh tools/run-tests.sh $(LUA) $(BUSTED) $(BUSTED_ARGS) $(SPECS)

# Lua dirs that exist, plus bin/'s scripts (luacheck only picks *.lua out of a directory).
LINT_LUA := $(wildcard lua bin spec migrations examples bench tools) $(filter-out %.c %.h,$(wildcard bin/*))

lint: all
	luacheck --no-color -q $(LINT_LUA)
	cppcheck --quiet --error-exitcode=1 --enable=warning,performance,portability --std=c11 \
	  --suppress=missingIncludeSystem --library=tools/cppcheck-lua.cfg --inline-suppr -I src src bin
	lua5.4 tools/objgraph.lua $(BUILD)/obj --quiet

# The suite against the module built with ASan+UBSan (runtime preloaded into the interpreter).
check-memory:
	@sh tools/check-memory.sh $(LUA)

fuzz:
	@sh tools/fuzz.sh $(FUZZ_SECONDS)

bench:
	@sh bench/run.sh

# The main job: a development cluster in ./.pgdata (unless DATABASE_URL is set), migrated to head.
dev: deps
	@$(MAKE) --no-print-directory all
	@sh tools/dev.sh start

# eval "$$(make -s dev-env)": DATABASE_URL of the development server (started if it is not running).
dev-env:
	@sh tools/dev.sh env

dev-stop:
	@sh tools/dev.sh stop

# The module, every Lua file under lua/ (symbolic links are installed as the files they name)
# and the kronos command.
install: all
	install -d $(DESTDIR)$(INST_LIBDIR)/kronos $(DESTDIR)$(INST_BINDIR)
	install -m 755 $(MODULE) $(DESTDIR)$(INST_LIBDIR)/kronos/core.so
	install -m 755 $(COMMAND) $(DESTDIR)$(INST_BINDIR)/kronos
	@for f in $(LUA_FILES); do \
	  echo "install lua/$$f $(DESTDIR)$(INST_LUADIR)/$$f"; \
	  install -D -m 644 lua/$$f $(DESTDIR)$(INST_LUADIR)/$$f || exit 1; \
	done

clean:
	rm -rf build
