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
