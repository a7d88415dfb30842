# Install rules and the Debian package (included from CMakeLists.txt).
#
# `cmake --install` lays out everything the server reads at run time, so that it runs from the prefix alone
# (core/main.c finds <prefix>/share/opensandbox from <prefix>/bin; no source tree is needed):
#
#   <prefix>/bin/opensandbox-server
#   <prefix>/share/opensandbox/lua/...              the Lua code (lua/main.lua is what core/main.c looks for)
#   <prefix>/share/opensandbox/hooks/...            the shipped hooks (config hooks.dir default)
#   <prefix>/share/opensandbox/config.lua           the default configuration, every key commented
#   <prefix>/share/opensandbox/execd/bootstrap.sh   the agent's bootstrap script
#   <prefix>/share/opensandbox/docs-assets/...      the /docs and /redoc assets (lua/api/docs.lua)
#   <prefix>/libexec/opensandbox/opensandbox-execd  the static agent (lua/runtimes/agent_files.lua)
#   <prefix>/lib/systemd/system/opensandbox.service the systemd unit (deploy/systemd)
#   <sysconfdir>/opensandbox/config.lua             the service's configuration: config.lua with the store
#                                                   under /var/lib/opensandbox (the unit's StateDirectory)
#   <prefix>/share/doc/opensandbox-server/README.md
#
# <sysconfdir> is /etc for the prefix /usr (the package), else <prefix>/etc. The unit names the binary and
# that configuration by their full paths under the prefix given at configure time.
#
# The docs assets are not built by CMake: scripts/build.sh fetches them with npm into build/docs-assets
# (OPENSANDBOX_DOCS_ASSETS_DIR); without them the install has no /docs assets (the pages answer, the
# scripts 404). scripts/package.sh checks they are there before it runs cpack.
#
# `cpack` (scripts/package.sh) makes opensandbox-server_<version>_<arch>.deb: its Depends are found by
# dpkg-shlibdeps from the libraries the binary links against, plus the Lua modules the code requires;
# docker.io is recommended. Its maintainer scripts (deploy/debian) create the system user, enable and
# start the unit.
include(GNUInstallDirs)

set(OPENSANDBOX_DOCS_ASSETS_DIR "${CMAKE_SOURCE_DIR}/build/docs-assets"
    CACHE PATH "Directory holding the /docs and /redoc assets (filled by scripts/docs-assets.sh)")
set(OSB_DATA ${CMAKE_INSTALL_DATADIR}/opensandbox)
if(CMAKE_INSTALL_PREFIX STREQUAL "/usr")
  set(OSB_ETC /etc/opensandbox)
else()
  set(OSB_ETC ${CMAKE_INSTALL_SYSCONFDIR}/opensandbox)
endif()
if(IS_ABSOLUTE "${OSB_ETC}")
  set(OSB_ETC_FULL ${OSB_ETC})
else()
  set(OSB_ETC_FULL ${CMAKE_INSTALL_PREFIX}/${OSB_ETC})
endif()
set(OSB_STATE_DIR /var/lib/opensandbox)

# ---- the files of a run -------------------------------------------------------------------------------
install(TARGETS opensandbox-server RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(DIRECTORY ${CMAKE_SOURCE_DIR}/lua ${CMAKE_SOURCE_DIR}/hooks ${CMAKE_SOURCE_DIR}/routes DESTINATION ${OSB_DATA})
install(FILES ${CMAKE_SOURCE_DIR}/config.lua DESTINATION ${OSB_DATA})
install(PROGRAMS ${CMAKE_SOURCE_DIR}/execd/bootstrap.sh DESTINATION ${OSB_DATA}/execd)
install(DIRECTORY ${OPENSANDBOX_DOCS_ASSETS_DIR}/ DESTINATION ${OSB_DATA}/docs-assets OPTIONAL
        FILES_MATCHING PATTERN "*.js" PATTERN "*.css")
if(TARGET opensandbox-execd)
  install(PROGRAMS ${CMAKE_BINARY_DIR}/execd/opensandbox-execd
          DESTINATION ${CMAKE_INSTALL_LIBEXECDIR}/opensandbox)
endif()
install(FILES ${CMAKE_SOURCE_DIR}/README.md DESTINATION ${CMAKE_INSTALL_DATADIR}/doc/opensandbox-server)

# ---- the service: unit and configuration ------------------------------------------------------------
# Both are made from the committed files with the paths of this prefix; a change to either reconfigures.
set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS
             ${CMAKE_SOURCE_DIR}/config.lua ${CMAKE_SOURCE_DIR}/deploy/systemd/opensandbox.service)

file(READ ${CMAKE_SOURCE_DIR}/deploy/systemd/opensandbox.service OSB_UNIT)
foreach(pair "=/usr/bin/opensandbox-server |=${CMAKE_INSTALL_FULL_BINDIR}/opensandbox-server "
             "--config /etc/opensandbox/config.lua|--config ${OSB_ETC_FULL}/config.lua"
             "file:/usr/share/doc/|file:${CMAKE_INSTALL_FULL_DATADIR}/doc/")
  string(REPLACE "|" ";" pair "${pair}")
  list(GET pair 0 from)
  list(GET pair 1 to)
  string(FIND "${OSB_UNIT}" "${from}" at)
  if(at EQUAL -1)
    message(FATAL_ERROR "deploy/systemd/opensandbox.service: '${from}' not found")
  endif()
  string(REPLACE "${from}" "${to}" OSB_UNIT "${OSB_UNIT}")
endforeach()
file(WRITE ${CMAKE_BINARY_DIR}/packaging/opensandbox.service "${OSB_UNIT}")
install(FILES ${CMAKE_BINARY_DIR}/packaging/opensandbox.service DESTINATION lib/systemd/system)

# /etc/opensandbox/config.lua: the commented defaults, with the store in the service's state directory
file(READ ${CMAKE_SOURCE_DIR}/config.lua OSB_CONFIG)
set(OSB_STORE_DEFAULT "path = \"~/.opensandbox/opensandbox.db\",")
string(FIND "${OSB_CONFIG}" "${OSB_STORE_DEFAULT}" at)
if(at EQUAL -1)
  message(FATAL_ERROR "config.lua: the store line '${OSB_STORE_DEFAULT}' was not found")
endif()
string(REPLACE "${OSB_STORE_DEFAULT}"
               "path = \"${OSB_STATE_DIR}/opensandbox.db\", -- the service's StateDirectory (packaged default)"
               OSB_CONFIG "${OSB_CONFIG}")
file(WRITE ${CMAKE_BINARY_DIR}/packaging/config.lua "${OSB_CONFIG}")
install(FILES ${CMAKE_BINARY_DIR}/packaging/config.lua DESTINATION ${OSB_ETC})

# ---- the Debian package -------------------------------------------------------------------------------
file(STRINGS ${CMAKE_SOURCE_DIR}/core/lcore.c OSB_VERSION_LINE REGEX "^#define OSB_VERSION \"")
string(REGEX REPLACE ".*\"(.*)\".*" "\\1" OSB_VERSION "${OSB_VERSION_LINE}")

file(WRITE ${CMAKE_BINARY_DIR}/packaging/conffiles "${OSB_ETC_FULL}/config.lua\n")

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME opensandbox-server)
set(CPACK_PACKAGE_VERSION ${OSB_VERSION})
set(CPACK_PACKAGE_VENDOR "OpenSandbox server (C core + Lua)")
set(CPACK_PACKAGE_CONTACT "OpenSandbox server maintainers <opensandbox@localhost>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "OpenSandbox-compatible sandbox server (C core, Lua, Docker and Kubernetes)")
set(CPACK_PACKAGE_DESCRIPTION
    "A self-hosted control plane for isolated sandboxes, compatible with the OpenSandbox REST API: creates, \
pauses, resumes, renews and deletes containerized sandboxes on Docker or Kubernetes. Runs as the systemd \
service opensandbox.service, configured in /etc/opensandbox/config.lua.")
set(CPACK_PACKAGING_INSTALL_PREFIX ${CMAKE_INSTALL_PREFIX})
set(CPACK_STRIP_FILES ON)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION admin)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
# the Lua modules the code requires (lua/): cjson, DBI (SQLite), lfs, lyaml, basexx; useradd (passwd) and
# deb-systemd-helper (init-system-helpers) are in every Debian system
set(CPACK_DEBIAN_PACKAGE_DEPENDS
    "lua-cjson, lua-dbi-sqlite3, lua-filesystem, lua-yaml, lua-basexx, passwd, init-system-helpers")
set(CPACK_DEBIAN_PACKAGE_RECOMMENDS "docker.io")
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
    ${CMAKE_BINARY_DIR}/packaging/conffiles ${CMAKE_SOURCE_DIR}/deploy/debian/postinst
    ${CMAKE_SOURCE_DIR}/deploy/debian/prerm ${CMAKE_SOURCE_DIR}/deploy/debian/postrm)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
include(CPack)
