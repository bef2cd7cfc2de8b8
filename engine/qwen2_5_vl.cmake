# Qwen2.5-VL: index layout, sampler, the model over ops.h. Included from engine/CMakeLists.txt;
# the guard lets tests/qwen2_5_vl include it too when the engine does not (yet).
if(NOT TARGET clipcap_qwen2_5_vl_layout)
    # Pure functions (no tensors): testable against transformers' intermediates on their own.
    add_library(clipcap_qwen2_5_vl_layout STATIC
        ${CMAKE_CURRENT_LIST_DIR}/qwen2_5_vl_layout.c
        ${CMAKE_CURRENT_LIST_DIR}/sampler.c)
    target_include_directories(clipcap_qwen2_5_vl_layout PUBLIC ${CMAKE_CURRENT_LIST_DIR})
    target_link_libraries(clipcap_qwen2_5_vl_layout PUBLIC m)
endif()

# The model over the op set, its weights, and the engine API implementation's pieces.
if(NOT TARGET clipcap_qwen2_5_vl AND TARGET clipcap_engine_core)
    add_library(clipcap_qwen2_5_vl STATIC
        ${CMAKE_CURRENT_LIST_DIR}/qwen2_5_vl.c
        ${CMAKE_CURRENT_LIST_DIR}/qwen_weights.c)
    target_include_directories(clipcap_qwen2_5_vl PUBLIC ${CMAKE_CURRENT_LIST_DIR})
    target_link_libraries(clipcap_qwen2_5_vl PUBLIC clipcap_qwen2_5_vl_layout clipcap_engine_core)
endif()

# The provenance reader (storage/model_manifest.c: libc + jansson) compiled for the engine, so
# engine.c can read clipcap-manifest.json on a build without the daemon's libraries.
if(NOT TARGET clipcap_engine_manifest)
    find_package(PkgConfig REQUIRED)
    pkg_check_modules(CLIPCAP_MANIFEST_DEPS REQUIRED IMPORTED_TARGET jansson)
    add_library(clipcap_engine_manifest STATIC
        ${CMAKE_CURRENT_LIST_DIR}/../storage/model_manifest.c)
    target_include_directories(clipcap_engine_manifest PUBLIC
                               ${CMAKE_CURRENT_LIST_DIR}/../storage)
    target_link_libraries(clipcap_engine_manifest PUBLIC PkgConfig::CLIPCAP_MANIFEST_DEPS)
endif()
