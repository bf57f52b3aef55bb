# Proof that the layer order is enforced by the build: a source compiled in the context of a layer
# (its include directories, flags and links, as a real source of that library) that includes a header
# of a higher layer must fail to compile, and one that includes its own or a lower layer's header must
# compile. Each probe is an EXCLUDE_FROM_ALL object library; its ctest (labels unit;layering) builds it
# with `cmake --build` and checks the outcome (tests/layering/expect_build.cmake).
#
# Included from the root CMakeLists.txt after src/ is added. A probe is skipped while its layer's
# target or the header it includes does not exist yet.

function(duplex_layering_probe name)
  cmake_parse_arguments(P "" "LAYER;HEADER;EXPECT" "" ${ARGN})
  if(NOT TARGET duplex_${P_LAYER})
    return()
  endif()
  file(GLOB found "${PROJECT_SOURCE_DIR}/src/*/include/${P_HEADER}")
  if(NOT found)
    return()
  endif()
  set(PROBE_NAME ${name})
  set(PROBE_LAYER ${P_LAYER})
  set(PROBE_HEADER ${P_HEADER})
  set(PROBE_EXPECT ${P_EXPECT})
  set(src "${CMAKE_BINARY_DIR}/layering/${name}.cpp")
  configure_file("${PROJECT_SOURCE_DIR}/tests/layering/probe.cpp.in" "${src}" @ONLY)
  add_library(duplex_layering_${name} OBJECT EXCLUDE_FROM_ALL "${src}")
  target_link_libraries(duplex_layering_${name} PRIVATE duplex::${P_LAYER})
  add_test(NAME layering.${name}
    COMMAND "${CMAKE_COMMAND}" -DBUILD_DIR=${CMAKE_BINARY_DIR} -DTARGET=duplex_layering_${name}
            -DEXPECT=${P_EXPECT} -DHEADER=${P_HEADER}
            -P "${PROJECT_SOURCE_DIR}/tests/layering/expect_build.cmake")
  # Probes drive the build tool in this build directory: never two at once.
  set_tests_properties(layering.${name} PROPERTIES
    LABELS "unit;layering" RESOURCE_LOCK duplex_build_tree TIMEOUT 300)
endfunction()

if(DUPLEX_TESTS)
  # Upward includes: must not compile.
  duplex_layering_probe(base_includes_store LAYER base HEADER duplex/store/pool.h EXPECT FAIL)
  duplex_layering_probe(base_includes_reactor LAYER base HEADER duplex/reactor/block_device.h EXPECT FAIL)
  duplex_layering_probe(reactor_includes_store LAYER reactor HEADER duplex/store/pool.h EXPECT FAIL)
  duplex_layering_probe(store_includes_volume LAYER store HEADER duplex/volume/block_volume.h EXPECT FAIL)
  duplex_layering_probe(volume_includes_nbd LAYER volume HEADER duplex/nbd/proto.h EXPECT FAIL)
  duplex_layering_probe(volume_includes_scsi LAYER volume HEADER duplex/scsi/logical_unit.h EXPECT FAIL)
  # SCSI semantics are transport-free; the front-ends do not reach into each other or the daemon.
  duplex_layering_probe(scsi_includes_iscsi LAYER scsi HEADER duplex/iscsi/pdu.h EXPECT FAIL)
  duplex_layering_probe(nbd_includes_iscsi LAYER nbd HEADER duplex/iscsi/pdu.h EXPECT FAIL)
  duplex_layering_probe(nbd_includes_daemon LAYER nbd HEADER duplex/daemon/config.h EXPECT FAIL)
  # duplexctl is a pure HTTP client: it sees neither the cluster code nor the daemon.
  duplex_layering_probe(cli_includes_cluster LAYER cli HEADER duplex/cluster/etcd.h EXPECT FAIL)
  duplex_layering_probe(cli_includes_daemon LAYER cli HEADER duplex/daemon/config.h EXPECT FAIL)
  # The API sits on the cluster layer and under the daemon; nothing below it sees it.
  duplex_layering_probe(cluster_includes_api LAYER cluster HEADER duplex/api/handler.h EXPECT FAIL)
  duplex_layering_probe(api_includes_daemon LAYER api HEADER duplex/daemon/config.h EXPECT FAIL)
  duplex_layering_probe(api_includes_cluster LAYER api HEADER duplex/cluster/catalogue.h EXPECT PASS)
  # The mirror sits on the volume layer, beside the cluster layer and under the front-ends.
  duplex_layering_probe(mirror_includes_cluster LAYER mirror HEADER duplex/cluster/etcd.h EXPECT FAIL)
  duplex_layering_probe(mirror_includes_nbd LAYER mirror HEADER duplex/nbd/proto.h EXPECT FAIL)
  duplex_layering_probe(volume_includes_mirror LAYER volume HEADER duplex/mirror/replica_meta.h EXPECT FAIL)
  duplex_layering_probe(mirror_includes_volume LAYER mirror HEADER duplex/volume/block_volume.h EXPECT PASS)
  # Positive controls: a layer sees its own headers and those of the layers below it.
  duplex_layering_probe(base_includes_base LAYER base HEADER duplex/base/status.h EXPECT PASS)
  duplex_layering_probe(store_includes_reactor LAYER store HEADER duplex/reactor/block_device.h EXPECT PASS)
  duplex_layering_probe(volume_includes_store LAYER volume HEADER duplex/store/pool.h EXPECT PASS)
  duplex_layering_probe(scsi_includes_volume LAYER scsi HEADER duplex/volume/block_volume.h EXPECT PASS)
  duplex_layering_probe(nbd_includes_volume LAYER nbd HEADER duplex/volume/block_volume.h EXPECT PASS)
  duplex_layering_probe(cli_includes_base LAYER cli HEADER duplex/base/status.h EXPECT PASS)
endif()
