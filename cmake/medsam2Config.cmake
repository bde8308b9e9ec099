# CMake package of medsam2 (relocatable: paths are relative to this file).
#
#   find_package(medsam2 0.1 REQUIRED)
#   target_link_libraries(my_plugin PRIVATE medsam2::medsam2)          # shared
#   target_link_libraries(my_tool PRIVATE medsam2::medsam2_static)     # static
#
# Sets medsam2_INCLUDE_DIRS and medsam2_LIBRARIES (the shared library) too.
include(CMakeFindDependencyMacro)
find_dependency(Threads)

get_filename_component(_medsam2_prefix "${CMAKE_CURRENT_LIST_DIR}/../../.." ABSOLUTE)
set(medsam2_INCLUDE_DIRS "${_medsam2_prefix}/include")

if(NOT TARGET medsam2::medsam2)
  add_library(medsam2::medsam2 SHARED IMPORTED)
  if(WIN32)
    set_target_properties(medsam2::medsam2 PROPERTIES
      IMPORTED_LOCATION "${_medsam2_prefix}/bin/medsam2.dll"
      IMPORTED_IMPLIB "${_medsam2_prefix}/lib/medsam2.dll.lib")
  elseif(APPLE)
    set_target_properties(medsam2::medsam2 PROPERTIES
      IMPORTED_LOCATION "${_medsam2_prefix}/lib/libmedsam2.dylib"
      IMPORTED_SONAME "@rpath/libmedsam2.dylib")
  else()
    set_target_properties(medsam2::medsam2 PROPERTIES
      IMPORTED_LOCATION "${_medsam2_prefix}/lib/libmedsam2.so"
      IMPORTED_SONAME "libmedsam2.so")
  endif()
  set_target_properties(medsam2::medsam2 PROPERTIES
    INTERFACE_INCLUDE_DIRECTORIES "${_medsam2_prefix}/include")
endif()

if(NOT TARGET medsam2::medsam2_static)
  add_library(medsam2::medsam2_static STATIC IMPORTED)
  if(WIN32)
    set(_medsam2_static_lib "${_medsam2_prefix}/lib/medsam2.lib")
    set(_medsam2_native ws2_32 userenv ntdll bcrypt advapi32 kernel32)
  elseif(APPLE)
    set(_medsam2_static_lib "${_medsam2_prefix}/lib/libmedsam2.a")
    set(_medsam2_native Threads::Threads "-framework CoreFoundation" "-framework Security" m)
  else()
    set(_medsam2_static_lib "${_medsam2_prefix}/lib/libmedsam2.a")
    set(_medsam2_native Threads::Threads ${CMAKE_DL_LIBS} m)
  endif()
  # Native libraries the Rust standard library needs (`--print native-static-libs`).
  set_target_properties(medsam2::medsam2_static PROPERTIES
    IMPORTED_LOCATION "${_medsam2_static_lib}"
    INTERFACE_INCLUDE_DIRECTORIES "${_medsam2_prefix}/include"
    INTERFACE_LINK_LIBRARIES "${_medsam2_native}")
  unset(_medsam2_static_lib)
  unset(_medsam2_native)
endif()

get_target_property(medsam2_LIBRARIES medsam2::medsam2 IMPORTED_LOCATION)
unset(_medsam2_prefix)
